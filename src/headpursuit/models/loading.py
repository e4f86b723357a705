"""Load a model and its tokenizer (or processor) on the device and in the dtype asked for.

``load_model`` takes a short name of a model that a Python package carries (see
:mod:`headpursuit.models.zoo`), a Hugging Face hub id, a local checkpoint directory, or a
GGUF file. A GGUF checkpoint is dequantised by transformers on its first load and cached
as a plain safetensors checkpoint, so later loads take about a second.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError, ModelLoadError
from .zoo import DEFAULT_MODEL, MODELS, convert_gguf, locate_named

#: ``--dtype`` names -> torch dtypes.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass
class LoadedModel:
    """A model ready for headpursuit: the network, its tokenizer, and for VLMs its processor.

    Attributes:
        model: the ``PreTrainedModel`` in eval mode.
        tokenizer: the tokenizer (the processor's tokenizer for VLMs).
        model_id: what was asked for (short name, hub id or path).
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
    def device(self) -> torch.device:
        """Where the input embeddings live (inputs are sent there)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def fingerprint(self) -> str:
        """A short hash of the weights (see :func:`weights_fingerprint`)."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    def __repr__(self) -> str:
        kind = "VLM" if self.is_vlm else "LM"
        n_params = sum(p.numel() for p in self.model.parameters())
        return (
            f"LoadedModel({self.model_id!r}, {type(self.model).__name__}, {kind}, "
            f"{n_params / 1e6:.0f}M params)"
        )


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


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """A torch dtype from a name (``"bfloat16"``), a dtype, or ``None`` (float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"Unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def check_device(device: str | torch.device | None) -> torch.device | None:
    """Refuse, with one line, a device that does not exist on this machine."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"Unknown device {device!r}; use cpu, cuda, cuda:1, mps, ...") from error
    if device.type == "cuda":
        available = torch.cuda.device_count()
        if available == 0:
            raise InputError(f"Device {device} asked for, but this machine has no CUDA GPU.")
        if device.index is not None and device.index >= available:
            raise InputError(f"Device {device} asked for, but this machine has {available} GPU(s).")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("Device mps asked for, but MPS is not available on this machine.")
    return device


#: The ``device_map`` strategies that accelerate understands (besides one device's name).
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def check_device_map(device_map: Any) -> Any:
    """Refuse a ``device_map`` string that is neither a strategy nor a device of this machine.

    Dicts (module name -> device) and ``None`` are passed on as they are.
    """
    if not isinstance(device_map, str) or device_map in DEVICE_MAP_STRATEGIES:
        return device_map
    try:
        check_device(device_map)
    except InputError as error:
        raise InputError(
            f"Unknown --device-map {device_map!r}: use one of "
            f"{', '.join(DEVICE_MAP_STRATEGIES)}, or a device of this machine ({error})"
        ) from error
    return device_map


def _is_vlm_config(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None


def _tokenizer_defaults(tokenizer: Any) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_directory(
    path: str | os.PathLike[str],
    model_id: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
    device_map: Any = None,
) -> LoadedModel:
    """Load a checkpoint directory or hub id (causal LM, or VLM with its processor)."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    path = str(path)

    def cannot_load(error: Exception) -> ModelLoadError:
        return ModelLoadError(
            f"Cannot load model {path!r}: {' '.join(str(error).split())[:300]} Pass a short "
            "name (headpursuit models), a Hugging Face hub id, a local checkpoint directory, "
            "or a .gguf file."
        )

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise cannot_load(error) from error
    kwargs: dict[str, Any] = {"dtype": dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
    # A checkpoint without weights or tokenizer files, or of an unknown model class, is the
    # user's to fix; transformers reports those as OSError / ValueError.
    try:
        if _is_vlm_config(config):
            model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
            processor = AutoProcessor.from_pretrained(path)
            tokenizer = processor.tokenizer
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
            processor = None
            tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise cannot_load(error) from error
    if device is not None and device_map is None:
        model.to(device)
    _tokenizer_defaults(tokenizer)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id, processor=processor)


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    device_map: Any = None,
) -> LoadedModel:
    """Load a causal LM or vision-language model with its tokenizer/processor.

    Args:
        name_or_path: a short name from :data:`headpursuit.models.zoo.MODELS` (``None`` is the
            embedded SmolLM2-135M-Instruct; ``"tiny-vlm"`` the small LLaVA trained here), a
            hub id, a local checkpoint directory, or a ``.gguf`` file.
        dtype: weights dtype, a torch dtype or ``"float32"`` / ``"bfloat16"`` / ``"float16"``
            (default float32).
        device: put the whole model there (``"cuda"``, ``"cuda:1"``, ``"cpu"``).
        device_map: passed to ``from_pretrained`` instead (e.g. ``"auto"`` to spread a large
            model over several GPUs); not together with ``device``.
    """
    torch_dtype = resolve_dtype(dtype)
    torch_device = check_device(device)
    device_map = check_device_map(device_map)
    if torch_device is not None and device_map is not None:
        raise InputError("Give --device or --device-map, not both.")
    options = {"dtype": torch_dtype, "device": torch_device, "device_map": device_map}
    text = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    if text in MODELS:
        return load_directory(locate_named(text), MODELS[text].display_name, **options)
    if text.endswith(".gguf"):
        return load_directory(convert_gguf(Path(text)), text, **options)
    return load_directory(text, text, **options)
