"""Capture each head's pooled output over a dataset, in head space, and store it on disk.

For layer l and head h, ``z_{l,h}`` is the head's slice of the attention output
projection's input. Pooling over positions is linear, so the pooled ``z`` (n × head_dim
per head) is stored and multiplied by the head's slice of W_O only on demand: that is
``head_dim / d_model`` of the memory of per-head residual vectors.

For architectures with a post-attention norm (Gemma 2/3), each token's ``z`` is scaled by
that norm's per-token factor ``1 / rms_t(attention output)`` before pooling, so that
``pooled_z @ (γ ⊙ W_O,h)ᵀ`` is exactly the head's pooled contribution to the residual.
The projection's bias belongs to no head and is not stored.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ._version import __version__
from .architectures import AttentionSites, image_token_id
from .loading import LoadedModel

ARTIFACT_KIND = "headpursuit.activations"
POOLINGS = ("mean", "last", "image", "text")


class ArtifactError(ValueError):
    """A file is not the artifact it should be, or belongs to another model."""


@dataclass
class Activations:
    """Pooled per-head outputs of a model over a dataset.

    Attributes:
        pooled: ``[n_samples, n_layers, n_heads, head_dim]`` float32, head space.
        model_id: the model that produced them.
        fingerprint: :func:`~headpursuit.loading.weights_fingerprint` of its weights.
        pooling: which positions were averaged ("mean", "last", "image", "text", "mask").
        d_model: residual width of the model.
        prompts: the input texts, in order.
        library_version: headpursuit version that wrote them.
    """

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

    def residual(self, sites: AttentionSites, layer: int, head: int) -> torch.Tensor:
        """Per-head residual contributions H_{l,h}: ``[n_samples, d_model]``."""
        self.check_model(sites)
        maps = sites.head_matrices(layer)[head]  # [d_model, head_dim]
        return self.pooled[:, layer, head, :] @ maps.T

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a safetensors file atomically (a temporary file, then a rename)."""
        metadata = {
            "kind": ARTIFACT_KIND,
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "pooling": self.pooling,
            "d_model": str(self.d_model),
            "n_samples": str(self.n_samples),
            "library_version": self.library_version,
            "prompts": json.dumps(self.prompts),
        }
        return atomic_write(
            Path(path), lambda tmp: save_file({"pooled": self.pooled.contiguous()}, tmp, metadata)
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Activations:
        """Read a file written by :meth:`save`; raises :class:`ArtifactError` on anything else."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No activations file at {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("kind") != ARTIFACT_KIND:
                    raise ArtifactError(
                        f"{path} is not a headpursuit activations file "
                        f"(kind={metadata.get('kind')!r}); make one with `headpursuit capture`."
                    )
                pooled = handle.get_tensor("pooled")
        except ArtifactError:
            raise
        except Exception as error:  # safetensors raises its own error types on bad headers
            raise ArtifactError(
                f"{path} is not a headpursuit activations file ({error}); "
                "make one with `headpursuit capture`."
            ) from error
        return cls(
            pooled=pooled,
            model_id=metadata["model_id"],
            fingerprint=metadata["fingerprint"],
            pooling=metadata["pooling"],
            d_model=int(metadata["d_model"]),
            prompts=json.loads(metadata.get("prompts", "[]")),
            library_version=metadata.get("library_version", "unknown"),
        )


def atomic_write(path: Path, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``; never leaves a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented UTF-8 JSON, atomically (see :func:`atomic_write`)."""
    text = json.dumps(data, indent=1, ensure_ascii=False, default=float)
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


class _PoolingHooks:
    """Forward hooks on every layer's output projection that pool its input per sample."""

    def __init__(self, sites: AttentionSites, out: torch.Tensor):
        self.sites = sites
        self.out = out  # [n, L, H, dh]
        self.weights: torch.Tensor | None = None  # [B, T] pooling weights, rows sum to 1
        self.rows: torch.Tensor | None = None  # [B] sample indices of the batch
        self.handles = [
            site.out_proj.register_forward_hook(self._hook(site.index)) for site in sites.layers
        ]

    def _hook(self, layer: int):
        eps = self.sites.post_norm_eps(layer)
        site = self.sites.layers[layer]
        has_post_norm = site.post_norm is not None
        n_heads, head_dim = site.n_heads, site.head_dim  # this layer's; the grid is padded

        def hook(module, args, output):
            z = args[0]
            weights = self.weights.to(z.device)
            if has_post_norm:
                scale = torch.rsqrt(output.float().pow(2).mean(-1) + eps)  # [B, T]
                weights = weights * scale
            pooled = torch.einsum("bt,btf->bf", weights, z.float())
            self.out[self.rows, layer, :n_heads, :head_dim] = pooled.view(
                -1, n_heads, head_dim
            ).cpu()

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _pool_weights(
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor,
    pooling: str,
    image_token_id: int | None,
    masks: Sequence[torch.Tensor] | None,
) -> torch.Tensor:
    """Pooling weights ``[B, T]`` (rows sum to 1) from the padding and the pooling rule."""
    valid = attention_mask.bool()
    if masks is not None:
        chosen = torch.zeros_like(valid)
        for row, mask in enumerate(masks):
            positions = valid[row].nonzero().squeeze(-1)
            if mask.numel() != positions.numel():
                raise ValueError(
                    f"Pooling mask {row} has {mask.numel()} entries but the prompt has "
                    f"{positions.numel()} tokens; give one boolean per prompt token."
                )
            chosen[row, positions] = mask.bool().to(valid.device)
    elif pooling == "mean":
        chosen = valid
    elif pooling == "last":
        chosen = torch.zeros_like(valid)
        last = valid.long().cumsum(-1).argmax(-1)
        chosen[torch.arange(len(valid)), last] = True
    elif pooling in ("image", "text"):
        if image_token_id is None:
            raise ValueError(f"pooling={pooling!r} needs a vision-language model.")
        is_image = input_ids == image_token_id
        chosen = valid & (is_image if pooling == "image" else ~is_image)
    else:
        raise ValueError(f"Unknown pooling {pooling!r}; choose one of {POOLINGS}.")
    counts = chosen.sum(-1, keepdim=True)
    if (counts == 0).any():
        empty = (counts[:, 0] == 0).nonzero()[:, 0].tolist()
        raise ValueError(f"No position to pool over in batch rows {empty} (pooling={pooling!r}).")
    return chosen.float() / counts


def format_prompts(tokenizer: Any, prompts: Sequence[str], chat: bool) -> list[str]:
    """Wrap prompts in the tokenizer's chat template (as a user turn) if ``chat``."""
    if not chat:
        return list(prompts)
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        for prompt in prompts
    ]


def capture(
    loaded: LoadedModel,
    prompts: Sequence[str],
    *,
    images: Sequence[Any] | None = None,
    pooling: str = "mean",
    masks: Sequence[torch.Tensor] | None = None,
    batch_size: int = 16,
    max_length: int = 512,
    chat: bool = False,
    progress: bool = True,
) -> Activations:
    """Run prompts (and images) through the model and pool each head's output.

    Args:
        loaded: the model, from :func:`~headpursuit.load_model`.
        prompts: n texts. For VLMs each must contain the processor's image token.
        images: n images (PIL or arrays) for a VLM, else ``None``.
        pooling: "mean" over prompt tokens (default), "last" token, and for VLMs "image"
            (image-token positions, the paper's choice) or "text" (the other positions).
        masks: optional per-prompt boolean masks, one entry per prompt token (as tokenized
            with ``chat``), choosing the positions to average; overrides ``pooling``.
        batch_size, max_length: batching and truncation of the prompts.
        chat: wrap each prompt in the chat template as a user turn.
        progress: show a progress bar with samples per second.

    Returns:
        :class:`Activations` with ``pooled`` of shape ``[n, n_layers, n_heads, head_dim]``.
    """
    if not prompts:
        raise ValueError("No prompts to capture.")
    if images is not None and len(images) != len(prompts):
        raise ValueError(f"{len(images)} images for {len(prompts)} prompts; give one each.")
    if masks is not None and len(masks) != len(prompts):
        raise ValueError(f"{len(masks)} pooling masks for {len(prompts)} prompts; give one each.")
    if masks is None and pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; choose one of {POOLINGS}.")
    model = loaded.model
    sites = AttentionSites(model)
    texts = format_prompts(loaded.tokenizer, prompts, chat)
    n = len(texts)
    out = torch.zeros(n, sites.n_layers, sites.n_heads, sites.head_dim)
    device = next(model.parameters()).device
    image_token = image_token_id(loaded)

    # Text-only batches are sorted by length so that little compute goes into padding.
    if images is None:
        lengths = [
            len(ids)
            for ids in loaded.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        ]
        order = sorted(range(n), key=lambda i: -lengths[i])
    else:
        order = list(range(n))

    hooks = _PoolingHooks(sites, out)
    bar = tqdm(total=n, desc="capture", unit="prompt", disable=not progress)
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                rows = order[start : start + batch_size]
                inputs = encode_batch(
                    loaded,
                    [texts[i] for i in rows],
                    None if images is None else [images[i] for i in rows],
                    max_length,
                )
                hooks.rows = torch.tensor(rows)
                hooks.weights = _pool_weights(
                    inputs["attention_mask"],
                    inputs["input_ids"],
                    pooling,
                    image_token,
                    None if masks is None else [masks[i] for i in rows],
                )
                inputs = {key: value.to(device) for key, value in inputs.items()}
                model.base_model(**inputs, use_cache=False)
                bar.update(len(rows))
    finally:
        hooks.remove()
        bar.close()
    return Activations(
        pooled=out,
        model_id=loaded.model_id,
        fingerprint=loaded.fingerprint,
        pooling="mask" if masks is not None else pooling,
        d_model=sites.d_model,
        prompts=list(prompts),
    )


def encode_batch(
    loaded: LoadedModel, texts: list[str], images: list[Any] | None, max_length: int
) -> dict[str, torch.Tensor]:
    """Tokenize a batch with right padding (and process images for a VLM)."""
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "right"
    if images is not None:
        if loaded.processor is None:
            raise ValueError(
                f"{loaded.model_id!r} is not a vision-language model; drop the images."
            )
        # One list of images per prompt: the form every image-text processor accepts
        # (Gemma-3's and Idefics3's refuse a flat list for a batch of prompts).
        nested = [[image] for image in images]
        return dict(loaded.processor(images=nested, text=texts, padding=True, return_tensors="pt"))
    return dict(
        tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    )
