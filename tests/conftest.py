"""Shared fixtures: tiny random-init models of several architectures, and the real SmolLM2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    CLIPImageProcessor,
    CLIPVisionConfig,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from headpursuit import LoadedModel

sys.path.insert(0, str(Path(__file__).parent))

WORDS = [f"w{i}" for i in range(90)] + ["red", "blue", "green", "Paris", "France"]
VOCAB_SIZE = 128
IMAGE_TOKEN = "<image>"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over WORDS, with pad/eos and an image token."""
    vocab = {"[PAD]": 0, "[EOS]": 1, IMAGE_TOKEN: 2}
    for word in WORDS:
        vocab[word] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="[PAD]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", eos_token="[EOS]", unk_token="[PAD]"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere, norms and biases included, so no term is trivially 0 or 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "norm" in name or "ln_" in name:
                param.copy_(1.0 + 0.3 * noise if "bias" not in name else 0.1 * noise)
            else:
                param.copy_(0.2 * noise)
    return model.eval()


COMMON = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=48,
    intermediate_size=64,
    num_hidden_layers=3,
    max_position_embeddings=64,
)

TEXT_CONFIGS = {
    "llama_gqa": lambda: LlamaConfig(
        **COMMON, num_attention_heads=6, num_key_value_heads=2, head_dim=12
    ),
    "qwen2": lambda: Qwen2Config(**COMMON, num_attention_heads=4, num_key_value_heads=2),
    "gemma3": lambda: Gemma3TextConfig(
        **COMMON,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
    ),
    "gpt2": lambda: GPT2Config(
        vocab_size=VOCAB_SIZE, n_embd=48, n_layer=3, n_head=4, n_positions=64
    ),
}


def tiny_text_model(name: str) -> LoadedModel:
    config = TEXT_CONFIGS[name]()
    config.pad_token_id, config.eos_token_id = 0, 1
    torch.manual_seed(0)
    model = _randomize(AutoModelForCausalLM.from_config(config, dtype=torch.float32))
    return LoadedModel(model=model, tokenizer=tiny_tokenizer(), model_id=f"tiny-{name}")


def tiny_llava() -> LoadedModel:
    text = LlamaConfig(**COMMON, num_attention_heads=4, num_key_value_heads=2)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=28,
        patch_size=7,
        projection_dim=32,
    )
    config = LlavaConfig(text_config=text, vision_config=vision, image_token_id=2)
    config.pad_token_id = 0
    torch.manual_seed(0)
    model = _randomize(LlavaForConditionalGeneration(config))
    tokenizer = tiny_tokenizer()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=7,
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    return LoadedModel(model=model, tokenizer=tokenizer, model_id="tiny-llava", processor=processor)


ARCHITECTURE_NAMES = [*TEXT_CONFIGS, "llava"]


def tiny_model(name: str) -> LoadedModel:
    return tiny_llava() if name == "llava" else tiny_text_model(name)


def random_prompts(n: int, seed: int = 0, image: bool = False) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    prompts = []
    for _ in range(n):
        length = int(torch.randint(3, 9, (1,), generator=generator))
        ids = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
        text = " ".join(WORDS[i] for i in ids)
        prompts.append(f"{IMAGE_TOKEN} {text}" if image else text)
    return prompts


def random_images(n: int, seed: int = 0) -> list:
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    arrays = torch.randint(0, 256, (n, 28, 28, 3), generator=generator, dtype=torch.uint8)
    return [Image.fromarray(a.numpy()) for a in arrays]


@pytest.fixture(scope="session")
def smollm():
    """The real embedded SmolLM2-135M-Instruct (converted and cached on first use)."""
    from headpursuit import load_model

    return load_model()
