"""The tiny real VLM: frozen SmolLM2-135M-Instruct + a small CLIP vision tower and projector.

It is a plain ``LlavaForConditionalGeneration`` with a ``LlavaProcessor``. The repository
ships only what was trained here (vision tower + projector weights, float16 or float32) and
the configs under ``headpursuit/data/tiny_vlm/``; :func:`assemble_tiny_vlm` joins them with the
cached SmolLM2 checkpoint into a full float32 checkpoint directory under the headpursuit
cache, and that directory loads like any LLaVA model. ``load_model("tiny-vlm")`` does both.
The vision tower's shape is read from the shipped ``config.json``
(:func:`shipped_vision_config`), so weights of any tower size load; a new tower is built
with :func:`vision_config` (training: ``scripts/train_tiny_vlm.py``).

The image token is ``<empty_output>`` (id 16), an existing, rarely used special token of the
SmolLM2 vocabulary, so the vocabulary is not resized and text-only logits of the VLM equal
the plain SmolLM2 logits exactly. Each 48×48 image becomes 16 image tokens (4×4 patches of
12 px; the CLS token is dropped).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from ..io import atomic_directory, cache_dir, save_pretrained_all

IMAGE_TOKEN = "<empty_output>"
IMAGE_SIZE = 48
PATCH_SIZE = 12
N_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "tiny_vlm"
WEIGHTS_FILE = "vision.safetensors"
VISION_PREFIXES = ("model.vision_tower.", "model.multi_modal_projector.")


def vlm_prompt(question: str) -> str:
    """The prompt format the tiny VLM was trained with: one ChatML user turn, no system turn.

    The image token comes first and is expanded to 16 copies by the processor.
    """
    return f"<|im_start|>user\n{IMAGE_TOKEN}{question}<|im_end|>\n<|im_start|>assistant\n"


def vision_config() -> Any:
    """The tower a new tiny VLM is trained with: a 6-layer CLIP ViT, hidden 256, 8 heads,
    MLP 1024, 48×48 input, patch 12 (the projector is then 256 → 576 → 576)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=6,
        num_attention_heads=8,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_channels=3,
        projection_dim=256,
    )


def shipped_vision_config(shipped_dir: str | os.PathLike[str] | None = None) -> Any:
    """The ``CLIPVisionConfig`` recorded in a shipped ``config.json`` (the one its weights fit).

    Raises:
        ModelLoadError: when the directory has no ``config.json`` with a ``vision_config``.
    """
    from transformers import CLIPVisionConfig

    shipped = Path(shipped_dir) if shipped_dir is not None else SHIPPED_DIR
    path = shipped / "config.json"
    recorded = json.loads(path.read_text()).get("vision_config") if path.is_file() else None
    if not recorded:
        raise ModelLoadError(
            f"No vision_config in {path}; the tiny VLM's directory needs the config.json "
            "written by scripts/train_tiny_vlm.py next to its weights."
        )
    return CLIPVisionConfig(**recorded)


def llava_config(text_config: Any, image_token_id: int, vision: Any = None) -> Any:
    """A LlavaConfig around ``text_config`` (SmolLM2's LlamaConfig) and ``vision`` (a
    ``CLIPVisionConfig``; default :func:`vision_config`)."""
    from transformers import LlavaConfig

    config = LlavaConfig(
        text_config=text_config,
        vision_config=vision if vision is not None else vision_config(),
        image_token_id=image_token_id,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=N_IMAGE_TOKENS,
        tie_word_embeddings=True,
    )
    config.pad_token_id = text_config.pad_token_id
    return config


def build_processor(tokenizer: Any) -> Any:
    """A LlavaProcessor: CLIP image processor (48×48, RGB) + the SmolLM2 tokenizer."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_convert_rgb=True,
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )


def build_tiny_vlm(lm_dir: str | os.PathLike[str], vision: Any = None) -> tuple[Any, Any]:
    """A fresh LLaVA: SmolLM2 weights as language model, random vision tower and projector.

    Args:
        lm_dir: the plain SmolLM2 checkpoint directory.
        vision: a ``CLIPVisionConfig`` (default: :func:`vision_config`).

    Returns:
        (model, processor): ``LlavaForConditionalGeneration`` in float32 (eval mode) and its
        ``LlavaProcessor``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlavaForConditionalGeneration

    lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config = llava_config(lm.config, image_token_id, vision)
    model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.weight = model.model.language_model.embed_tokens.weight
    model.eval()
    return model, build_processor(tokenizer)


def vision_state_dict(model: Any, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The trained part: vision tower + projector weights, keyed as in the full checkpoint
    (cast to ``dtype`` when given)."""
    return {
        name: tensor.detach().cpu().to(dtype or tensor.dtype).contiguous()
        for name, tensor in model.state_dict().items()
        if name.startswith(VISION_PREFIXES)
    }


def save_shipped(model: Any, processor: Any, out_dir: str | os.PathLike[str]) -> Path:
    """Write the shippable part: ``vision.safetensors`` (float16), ``config.json`` and the
    image processor config."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(vision_state_dict(model, torch.float16), str(out / WEIGHTS_FILE))
    config = _without_local_paths(model.config.to_dict())
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    processor.image_processor.save_pretrained(out)
    return out


def _without_local_paths(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every ``_name_or_path`` emptied, at any depth: transformers records the
    directory a model was loaded from (here a path in the trainer's cache), which means
    nothing on another machine."""
    cleaned: dict[str, Any] = {}
    for key, value in config.items():
        if key == "_name_or_path":
            value = ""
        elif isinstance(value, dict):
            value = _without_local_paths(value)
        cleaned[key] = value
    return cleaned


def _assembled_path(shipped: Path, lm_dir: Path) -> Path:
    digest = hashlib.sha256()
    for name in (WEIGHTS_FILE, "config.json", "preprocessor_config.json"):
        digest.update((shipped / name).read_bytes())
    digest.update(str(lm_dir.resolve()).encode())
    return cache_dir() / f"tiny-vlm-{digest.hexdigest()[:12]}"


def assemble_tiny_vlm(
    lm_dir: str | os.PathLike[str], shipped_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Full LLaVA checkpoint directory of the tiny VLM in the cache (built on first use).

    Args:
        shipped_dir: directory with ``vision.safetensors`` + configs (default: the shipped one).
        lm_dir: the plain SmolLM2 checkpoint (``headpursuit.models.zoo.locate_named("smollm2-135m")``).

    Returns:
        A directory that ``load_model`` (or ``LlavaForConditionalGeneration.from_pretrained``
        with ``AutoProcessor``) loads. The directory appears atomically.
    """
    from safetensors.torch import load_file

    shipped = Path(shipped_dir) if shipped_dir is not None else SHIPPED_DIR
    if not (shipped / WEIGHTS_FILE).is_file():
        raise ModelLoadError(
            f"No trained tiny VLM at {shipped}; train one with `python scripts/train_tiny_vlm.py`."
        )
    lm_path = Path(lm_dir)
    target = _assembled_path(shipped, lm_path)
    if (target / "config.json").exists():
        return target
    model, processor = build_tiny_vlm(lm_path, shipped_vision_config(shipped))
    missing = set(vision_state_dict(model))
    weights = load_file(str(shipped / WEIGHTS_FILE))
    if set(weights) != missing:
        raise ModelLoadError(
            f"{shipped / WEIGHTS_FILE} does not match the tiny VLM's vision weights."
        )
    model.load_state_dict({name: w.float() for name, w in weights.items()}, strict=False)
    return atomic_directory(target, lambda staging: save_pretrained_all(staging, model, processor))
