"""The activations artifact: pooled head-space outputs ``[n, layers, heads, head_dim]``.

:class:`Activations` holds them in memory. On disk they are a directory of shards with
``meta.json`` and ``prompts.jsonl`` (schema 3, the one format for one shard or many:
see :mod:`headpursuit.activations.shards`). :meth:`Activations.save` writes it,
:meth:`Activations.load` reads it into memory, and :meth:`Activations.open` reads it a
shard at a time (:class:`~headpursuit.activations.shards.ShardedActivations`) for data
larger than memory.

Single-file activations of earlier versions (one safetensors file: tensor ``pooled``,
the prompts as a ``prompt_bytes``/``prompt_ends`` pair in schema 2 or in the header in
schema 1, and string metadata) are still read by :meth:`Activations.load` and
:meth:`Activations.open`, into the same in-memory object. Every reader validates what
it reads and refuses a damaged, foreign, incomplete, non-float or non-finite artifact
with one line.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from .._version import __version__
from ..errors import ArtifactError, InputError
from ..heads import Head
from ..io import register_artifact
from ..models.architectures import AttentionSites
from . import shards
from .shards import ShardedActivations

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
        settings: how they were captured (``max_length``, ``chat``, ``batch_size``,
            ``model_dtype``; empty when unknown).
    """

    kind: ClassVar[str] = shards.KIND
    schema_version: ClassVar[int] = shards.SCHEMA_VERSION
    made_by: ClassVar[str] = shards.MADE_BY

    pooled: torch.Tensor
    model_id: str
    fingerprint: str
    pooling: str
    d_model: int
    prompts: list[str] = field(default_factory=list)
    library_version: str = __version__
    settings: dict[str, Any] = field(default_factory=dict)

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
        dims = (self.n_layers, self.n_heads, self.head_dim)
        shards.check_fits(
            "These activations", self.model_id, self.fingerprint, dims, self.d_model, sites,
            fingerprint,
        )  # fmt: skip

    def check_distinct(self) -> None:
        """Refuse fewer than two distinct samples: centring would make every head zero."""
        flat = self.pooled.reshape(self.n_samples, -1)
        if self.n_samples < 2 or bool((flat == flat[0]).all()):
            raise shards.degenerate(self.n_samples)

    def head_codes(self, heads: Sequence[Head]) -> torch.Tensor:
        """The pooled outputs of ``heads``: ``[len(heads), n, head_dim]`` float32."""
        return torch.stack([self.pooled[:, h.layer, h.head] for h in heads]).float()

    def layer_codes(self, layer: int) -> torch.Tensor:
        """One layer's pooled outputs: ``[n, n_heads, head_dim]`` float32."""
        return self.pooled[:, layer].float()

    def iter_shards(self, verify: bool = True) -> Iterator[tuple[int, int, torch.Tensor]]:
        """One ``(0, n, pooled)``: the in-memory twin of :meth:`ShardedActivations.iter_shards`."""
        yield 0, self.n_samples, self.pooled

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

    def save(self, path: str | os.PathLike[str], *, shard_size: int | None = None) -> Path:
        """Write the artifact directory ``path`` (see :mod:`~headpursuit.activations.shards`).

        Atomic: the directory is filled under a temporary name and renamed; an artifact
        already at ``path`` is replaced. ``shard_size``: rows per shard (default: about
        128 MiB per shard).
        """
        if shard_size is not None and shard_size < 1:
            raise InputError(f"shard_size must be at least 1, got {shard_size}.")
        if self.pooled.dim() != 4 or min(self.pooled.shape) < 1:
            raise InputError(
                f"pooled has shape {list(self.pooled.shape)}; expected [n, layers, heads, "
                "head_dim] with every size at least 1."
            )
        if self.prompts and len(self.prompts) != self.n_samples:
            raise InputError(
                f"{len(self.prompts)} prompts for {self.n_samples} samples; give one each."
            )
        plan = shards.Plan(
            model_id=self.model_id,
            fingerprint=self.fingerprint,
            pooling=self.pooling,
            d_model=self.d_model,
            shape=(self.n_samples, self.n_layers, self.n_heads, self.head_dim),
            shard_size=shard_size
            or shards.default_shard_size(self.n_layers, self.n_heads, self.head_dim),
            prompts_sha256=shards.prompts_digest(self.prompts),
            prompts_count=len(self.prompts),
            settings=dict(self.settings),
        )
        return shards.save_directory(Path(path), plan, self.pooled.float(), self.prompts)

    @classmethod
    def sniff(cls, path: Path) -> bool:
        """Whether ``path`` looks like activations: an artifact directory or a safetensors file."""
        path = Path(path)
        if path.is_dir():
            return shards.is_artifact_directory(path)
        try:
            with open(path, "rb") as handle:
                head = handle.read(9)
        except OSError:
            return False
        return len(head) == 9 and head[8:9] == b"{"

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, verify: bool = True
    ) -> ShardedActivations | Activations:
        """Open activations for reading a shard at a time (an earlier single file: in memory).

        With ``verify`` every shard's checksum and values are checked now, one shard in
        memory at a time. See :class:`~headpursuit.activations.shards.ShardedActivations`.
        """
        path = Path(path)
        if path.is_dir():
            return ShardedActivations(path, verify=verify)
        return cls.load(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Activations:
        """Read and validate an artifact directory (or an earlier single file) into memory."""
        path = Path(path)
        if path.is_dir():
            reader = ShardedActivations(path, verify=False)
            return cls(
                pooled=reader.read_all(),  # checksums and values checked shard by shard
                model_id=reader.model_id,
                fingerprint=reader.fingerprint,
                pooling=reader.pooling,
                d_model=reader.d_model,
                prompts=reader.prompts,
                library_version=reader.library_version,
                settings=reader.settings,
            )
        return cls._load_file(path)

    @classmethod
    def _load_file(cls, path: Path) -> Activations:
        """Read a single-file artifact of schema 1 or 2 (earlier headpursuit versions)."""
        from safetensors import safe_open

        if not path.is_file():
            raise InputError(
                f"No activations file or directory at {path}; make one with `{cls.made_by}`."
            )
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
                version = _int(metadata.get("schema_version", "1"))
                if version is None or version > 2:
                    raise ArtifactError(
                        f"{path}: unsupported schema version "
                        f"{metadata.get('schema_version')!r} for a single file; capture the "
                        "activations again."
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


#: What ranking reads: activations in memory, or opened a shard at a time.
AnyActivations = Activations | ShardedActivations


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
