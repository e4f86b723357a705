"""Tiny random vision-language models with their real processors: Qwen2-VL, Gemma-3, Idefics3.

Each has a word-level tokenizer over ``conftest.WORDS`` plus the model's special tokens, a
2-layer text backbone of width 48 and a 1-layer vision tower on 28x28 images. The image
token of each is a different id, and Gemma-3's processor calls the begin-of-image token
its ``image_token_id`` while the model marks image positions with the soft-token id: one
function must pick the right one for all.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from conformance import randomise
from conftest import WORDS
from headpursuit import AttentionSites, LoadedModel

TEXT = dict(
    vocab_size=128,
    hidden_size=48,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)


def tokenizer_with(specials: list[str], named: dict[str, str] | None = None):
    """A word-level tokenizer with ``specials`` (ids 2, 3, ...) and named special tokens."""
    vocab = {"[PAD]": 0, "[EOS]": 1}
    for token in specials:
        vocab[token] = len(vocab)
    for word in WORDS:
        vocab[word] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="[PAD]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        eos_token="[EOS]",
        unk_token="[PAD]",
        extra_special_tokens=named or {},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    return tokenizer


def tiny_qwen2_vl() -> tuple[LoadedModel, str, int]:
    """Qwen2-VL: a 56x56 image becomes 4 ``<|image_pad|>`` tokens (2x2 merged patches)."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
    )

    specials = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
    tokenizer = tokenizer_with(specials)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    text = dict(
        TEXT,
        model_type="qwen2_vl_text",
        rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 2, 2]},
    )
    vision = dict(depth=1, embed_dim=32, hidden_size=48, num_heads=2, patch_size=14)
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = randomise(Qwen2VLForConditionalGeneration(config))
    images = Qwen2VLImageProcessor(
        min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    # The processor's constructor insists on a video processor, which needs torchvision;
    # images never touch it, so it is built without one.
    processor = Qwen2VLProcessor.__new__(Qwen2VLProcessor)
    processor.image_processor, processor.tokenizer, processor.video_processor = (
        images,
        tokenizer,
        None,
    )
    processor.image_token, processor.image_token_id = "<|image_pad|>", ids["<|image_pad|>"]
    processor.video_token, processor.video_token_id = "<|video_pad|>", ids["<|video_pad|>"]
    processor.chat_template = None
    loaded = LoadedModel(
        model=model, tokenizer=tokenizer, model_id="tiny-qwen2-vl", processor=processor
    )
    return loaded, "<|vision_start|><|image_pad|><|vision_end|>", 4


def tiny_gemma3() -> tuple[LoadedModel, str, int]:
    """Gemma-3: ``<start_of_image>`` expands to 4 soft image tokens between boi and eoi."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    specials = ["<start_of_image>", "<image_soft_token>", "<end_of_image>"]
    named = {
        "boi_token": "<start_of_image>",
        "image_token": "<image_soft_token>",
        "eoi_token": "<end_of_image>",
    }
    tokenizer = tokenizer_with(specials, named)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    text = Gemma3TextConfig(
        **{**TEXT, "num_key_value_heads": 1},
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
    )
    vision = SiglipVisionConfig(
        image_size=28,
        patch_size=7,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        image_token_index=ids["<image_soft_token>"],
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
    )
    model = randomise(Gemma3ForConditionalGeneration(config))
    images = Gemma3ImageProcessor(size={"height": 28, "width": 28}, do_pan_and_scan=False)
    processor = Gemma3Processor(image_processor=images, tokenizer=tokenizer, image_seq_length=4)
    loaded = LoadedModel(
        model=model, tokenizer=tokenizer, model_id="tiny-gemma3", processor=processor
    )
    return loaded, "<start_of_image>", 4


def tiny_idefics3() -> tuple[LoadedModel, str, int]:
    """Idefics3 (SmolVLM's family): ``<image>`` expands to 4 image tokens (pixel shuffle 2)."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    specials = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    tokenizer = tokenizer_with(specials)
    vision = Idefics3VisionConfig(
        image_size=28,
        patch_size=7,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    config = Idefics3Config(
        text_config=LlamaConfig(**TEXT),
        vision_config=vision,
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    model = randomise(Idefics3ForConditionalGeneration(config))
    images = Idefics3ImageProcessor(
        do_image_splitting=False, size={"longest_edge": 28}, max_image_size={"longest_edge": 28}
    )
    processor = Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=4)
    loaded = LoadedModel(
        model=model, tokenizer=tokenizer, model_id="tiny-idefics3", processor=processor
    )
    return loaded, "<image>", 4


def out_proj_inputs(model, inputs: dict) -> dict[int, torch.Tensor]:
    """The input of every layer's attention output projection (``[B, T, heads * head_dim]``)
    in one forward pass of ``model`` on ``inputs``: the per-head outputs, read by plain hooks
    (the oracle that capture's pooling is checked against)."""
    sites = AttentionSites(model)
    seen: dict[int, torch.Tensor] = {}
    handles = [
        site.out_proj.register_forward_hook(
            lambda module, args, out, i=site.index: seen.__setitem__(i, args[0].detach())
        )
        for site in sites.layers
    ]
    try:
        with torch.inference_mode():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen
