"""The activations artifact: pooled head-space outputs ``[n, layers, heads, head_dim]`` on disk.

A safetensors file holds one tensor ``pooled`` (float32) and string metadata: ``kind``,
``schema_version``, model id, weights fingerprint, pooling rule, ``d_model``, ``n_samples``
and the library version. The prompts are stored beside the tensor as a ``prompts``
tensor of UTF-8 bytes (never in the header, whose size safetensors limits), with their
offsets. :meth:`Activations.load` validates all of it and refuses a damaged, foreign,
non-float or non-finite file with one line.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from .._version import __version__
from ..errors import ArtifactError, DegenerateDataError, InputError
from ..io import atomic_write, register_artifact
from ..models.architectures import AttentionSites

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@register_artifact
@dataclass
class Activations:
    """Pooled per-head outputs of a model over a dataset (TransformerLens's pooled ``z``).

    Attributes:
        pooled: ``[n_samples, n_layers, n_heads, head_dim]`` float32, head space (the input
            of the attention output projection, before W_O).
        model_id: the model that produced them.
        fingerprint: :func:`~headpursuit.models.loading.weights_fingerprint` of its weights.
        pooling: which positions were averaged ("mean", "all", "last", "image", "text", "mask").
        d_model: residual width of the model.
        prompts: the input texts, in order.
        library_version: headpursuit version that wrote them.
    """

    kind: ClassVar[str] = "headpursuit.activations"
    schema_version: ClassVar[int] = 2
    made_by: ClassVar[str] = "headpursuit capture"

    pooled: torch.Tensor
    model_id: str
    fingerprint: str
    pooling: str
    d_model: int
    prompts: list[str] = field(default_factory=list)
    library_version: str = __version__

    @property
    def n_samples(self) -> int:
        return self.pooled.shape[0]

    @property
    def n_layers(self) -> int:
        return self.pooled.shape[1]

    @property
    def n_heads(self) -> int:
        return self.pooled.shape[2]

    @property
    def head_dim(self) -> int:
        return self.pooled.shape[3]

    def __repr__(self) -> str:
        return (
            f"Activations({self.n_samples} samples x {self.n_layers} layers x "
            f"{self.n_heads} heads x head_dim {self.head_dim}, pooling={self.pooling!r}, "
            f"model={self.model_id!r})"
        )

    def check_model(self, sites: AttentionSites, fingerprint: str | None = None) -> None:
        """Raise :class:`ArtifactError` if these activations do not come from this model."""
        shape = (sites.n_layers, sites.n_heads, sites.head_dim)
        if (self.n_layers, self.n_heads, self.head_dim) != shape or self.d_model != sites.d_model:
            raise ArtifactError(
                f"These activations ({self.n_layers} layers x {self.n_heads} heads x "
                f"{self.head_dim}, from {self.model_id!r}) do not fit this model "
                f"({shape[0]} x {shape[1]} x {shape[2]}). Capture them again with this model."
            )
        if fingerprint is not None and fingerprint != self.fingerprint:
            raise ArtifactError(
                f"These activations come from {self.model_id!r} (weights {self.fingerprint}), "
                f"not from this model (weights {fingerprint}). Capture them again with it."
            )

    def check_distinct(self) -> None:
        """Refuse fewer than two distinct samples: centring would make every head zero."""
        flat = self.pooled.reshape(self.n_samples, -1)
        if self.n_samples < 2 or bool((flat == flat[0]).all()):
            raise DegenerateDataError(
                f"These activations hold {self.n_samples} sample(s) with identical head "
                "outputs (one prompt, or duplicates), so every head's centred output is zero "
                "and no head can be ranked or explained. Capture at least two distinct prompts."
            )

    def residual(self, sites: AttentionSites, layer: int, head: int) -> torch.Tensor:
        """Per-head residual contributions H_{l,h} (TransformerLens's ``result``): ``[n, d_model]``."""
        self.check_model(sites)
        maps = sites.head_matrices(layer)[head]  # [d_model, head_dim]
        return self.pooled[:, layer, head, :] @ maps.T

    def to_frame(self):
        """A pandas DataFrame: one row per sample, its prompt and per-layer output norms."""
        import pandas as pd

        norms = self.pooled.norm(dim=-1).mean(-1)  # [n, L] mean head-space norm per layer
        frame = pd.DataFrame(norms.numpy(), columns=[f"L{l}" for l in range(self.n_layers)])
        frame.insert(0, "prompt", self.prompts if self.prompts else [""] * self.n_samples)
        return frame

    # -- files ----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a safetensors file atomically (prompts as a byte tensor, not in the header)."""
        from safetensors.torch import save_file

        tensors = {"pooled": self.pooled.float().contiguous(), **_encode_texts(self.prompts)}
        metadata = {
            "kind": self.kind,
            "schema_version": str(self.schema_version),
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "pooling": self.pooling,
            "d_model": str(self.d_model),
            "n_samples": str(self.n_samples),
            "library_version": self.library_version,
        }
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata))

    @classmethod
    def sniff(cls, path: Path) -> bool:
        """Whether ``path`` looks like a safetensors file (8-byte header length, then JSON)."""
        try:
            with open(path, "rb") as handle:
                head = handle.read(9)
        except OSError:
            return False
        return len(head) == 9 and head[8:9] == b"{"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Activations:
        """Read and validate a file written by :meth:`save`; one-line errors on anything else."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise InputError(f"No activations file at {path}; make one with `{cls.made_by}`.")
        if not cls.sniff(path):
            raise ArtifactError(
                f"{path} is not a headpursuit activations file (not safetensors); make one "
                f"with `{cls.made_by}`."
            )
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("kind") != cls.kind:
                    raise ArtifactError(
                        f"{path} is not a headpursuit activations file "
                        f"(kind={metadata.get('kind')!r}); make one with `{cls.made_by}`."
                    )
                names = set(handle.keys())
                if "pooled" not in names:
                    raise ArtifactError(f"{path} has no 'pooled' tensor; capture again.")
                pooled = handle.get_tensor("pooled")
                texts = {
                    k: handle.get_tensor(k) for k in ("prompt_bytes", "prompt_ends") if k in names
                }
        except ArtifactError:
            raise
        except Exception as error:  # safetensors raises its own error types on bad files
            raise ArtifactError(
                f"{path} is not a readable activations file ({' '.join(str(error).split())}); "
                f"make one with `{cls.made_by}`."
            ) from error
        return cls._validated(path, pooled, metadata, texts)

    @classmethod
    def _validated(
        cls, path: Path, pooled: torch.Tensor, metadata: dict[str, str], texts: dict
    ) -> Activations:
        def fail(message: str) -> ArtifactError:
            return ArtifactError(f"{path}: {message}; capture the activations again.")

        version = _int(metadata.get("schema_version", "1"))
        if version is None or version > cls.schema_version:
            raise fail(f"unsupported schema version {metadata.get('schema_version')!r}")
        if pooled.dtype not in _FLOAT_DTYPES:
            raise fail(f"'pooled' has dtype {pooled.dtype}, expected floating point")
        if pooled.dim() != 4 or min(pooled.shape) < 1:
            raise fail(
                f"'pooled' has shape {list(pooled.shape)}, expected [n, layers, heads, head_dim]"
            )
        pooled = pooled.float()
        if not torch.isfinite(pooled).all():
            raise fail("'pooled' holds NaN or infinite values")
        missing = [
            k for k in ("model_id", "fingerprint", "pooling", "d_model") if k not in metadata
        ]
        if missing:
            raise fail(f"missing metadata {missing}")
        d_model = _int(metadata["d_model"])
        if d_model is None or d_model < 1:
            raise fail(f"d_model {metadata['d_model']!r} is not a positive integer")
        n_samples = _int(metadata.get("n_samples", str(pooled.shape[0])))
        if n_samples != pooled.shape[0]:
            raise fail(f"n_samples {metadata.get('n_samples')!r} disagrees with the tensor")
        if version == 1:
            prompts = _json_list(metadata.get("prompts", "[]"))
        else:
            prompts = _decode_texts(texts) if texts else []
        if prompts is None or (prompts and len(prompts) != n_samples):
            raise fail("the stored prompts do not match the samples")
        return cls(
            pooled=pooled,
            model_id=metadata["model_id"],
            fingerprint=metadata["fingerprint"],
            pooling=metadata["pooling"],
            d_model=d_model,
            prompts=prompts,
            library_version=metadata.get("library_version", "unknown"),
        )


def _int(text: Any) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _json_list(text: str) -> list[str] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _encode_texts(texts: list[str]) -> dict[str, torch.Tensor]:
    """Texts as one uint8 tensor of UTF-8 bytes and an int64 tensor of end offsets."""
    encoded = [text.encode("utf-8") for text in texts]
    ends = torch.tensor([len(b) for b in encoded], dtype=torch.int64).cumsum(0)
    data = torch.frombuffer(bytearray(b"".join(encoded)) or bytearray(1), dtype=torch.uint8)
    return {"prompt_bytes": data.clone(), "prompt_ends": ends}


def _decode_texts(tensors: dict[str, torch.Tensor]) -> list[str] | None:
    data, ends = tensors.get("prompt_bytes"), tensors.get("prompt_ends")
    if data is None or ends is None or data.dtype != torch.uint8 or ends.dim() != 1:
        return None
    raw = data.numpy().tobytes()
    bounds = [0, *ends.tolist()]
    if any(b < a for a, b in itertools.pairwise(bounds)) or bounds[-1] > len(raw):
        return None
    try:
        return [raw[a:b].decode("utf-8") for a, b in itertools.pairwise(bounds)]
    except UnicodeDecodeError:
        return None
