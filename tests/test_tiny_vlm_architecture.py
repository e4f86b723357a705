"""The tiny VLM's tower is read from its shipped config: a random-init model of the new shape
(6-layer CLIP ViT, hidden 256) and one of the old shape (3 layers, hidden 128) both go through
save_shipped -> assemble_tiny_vlm, on a small random language model (no SmolLM2, no training).
"""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from conftest import WORDS, random_images
from headpursuit import AttentionSites, LoadedModel, capture, load_model
from headpursuit.errors import ModelLoadError
from headpursuit.models.tiny_vlm import (
    IMAGE_TOKEN,
    N_IMAGE_TOKENS,
    WEIGHTS_FILE,
    assemble_tiny_vlm,
    build_tiny_vlm,
    save_shipped,
    shipped_vision_config,
    vision_config,
    vlm_prompt,
)
from tiny_vlms import out_proj_inputs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
CHAT = ["<|im_start|>", "<|im_end|>", "user", "assistant"]
OLD_TOWER = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4)


def _tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokens for WORDS plus the tiny VLM's image token and ChatML markers."""
    vocab = {"[PAD]": 0, "[EOS]": 1, IMAGE_TOKEN: 2}
    for word in [*CHAT, *WORDS]:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="[PAD]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", eos_token="[EOS]", unk_token="[PAD]"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, *CHAT[:2]]})
    return tokenizer


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """A plain Llama checkpoint directory (4 layers × 3 heads, d_model 48) with its tokenizer."""
    directory = tmp_path_factory.mktemp("lm")
    tokenizer = _tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=3,
        num_key_value_heads=3,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADPURSUIT_CACHE", str(tmp_path / "cache"))


def _shipped(lm_dir, out, vision=None):
    """A random tower of the given shape, written like a trained one; returns the model."""
    torch.manual_seed(1)
    model, processor = build_tiny_vlm(lm_dir, vision)
    with torch.no_grad():  # non-trivial projector/tower weights, not float16-exact
        for name, param in model.named_parameters():
            if name.startswith("model.multi_modal_projector"):
                param.add_(0.1 * torch.randn_like(param))
    save_shipped(model, processor, out)
    return model


def test_new_tower_is_read_back_from_the_shipped_config(lm_dir, tmp_path):
    built = _shipped(lm_dir, tmp_path / "new")
    tower = built.config.vision_config
    assert (tower.num_hidden_layers, tower.hidden_size, tower.num_attention_heads) == (6, 256, 8)
    assert tower.intermediate_size == 1024
    projector = built.model.multi_modal_projector
    assert (projector.linear_1.in_features, projector.linear_1.out_features) == (256, 48)
    recorded = shipped_vision_config(tmp_path / "new")
    shape = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    assert [getattr(recorded, key) for key in shape] == [256, 1024, 6, 8]
    assert (recorded.image_size, recorded.patch_size) == (48, 12)
    written = (tmp_path / "new" / "config.json").read_text()
    assert str(lm_dir) not in written  # the trainer's local paths are not shipped

    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "new" / WEIGHTS_FILE))
    assert {w.dtype for w in stored.values()} == {torch.float16}
    loaded = load_model(assemble_tiny_vlm(lm_dir, tmp_path / "new"))
    assert isinstance(loaded.model, LlavaForConditionalGeneration)
    state = loaded.model.state_dict()
    for name, weight in stored.items():  # the float16 weights, widened exactly to float32
        assert state[name].dtype == torch.float32
        torch.testing.assert_close(state[name], weight.float(), atol=0.0, rtol=0.0)
    # The language model is the plain checkpoint, untouched.
    plain = LlamaForCausalLM.from_pretrained(lm_dir).state_dict()
    torch.testing.assert_close(
        state["model.language_model.layers.2.self_attn.o_proj.weight"],
        plain["model.layers.2.self_attn.o_proj.weight"],
        atol=0.0,
        rtol=0.0,
    )


def test_old_tower_weights_still_load(lm_dir, tmp_path):
    """Weights of the first shipped shape (3 layers, hidden 128) load through their config."""
    _shipped(lm_dir, tmp_path / "old", CLIPVisionConfig(**vision_config().to_dict() | OLD_TOWER))
    assert shipped_vision_config(tmp_path / "old").num_hidden_layers == 3
    loaded = load_model(assemble_tiny_vlm(lm_dir, tmp_path / "old"))
    assert loaded.model.config.vision_config.hidden_size == 128
    assert loaded.model.model.multi_modal_projector.linear_1.in_features == 128


def test_weights_that_do_not_fit_the_config_are_refused(lm_dir, tmp_path):
    _shipped(lm_dir, tmp_path / "new")
    config_path = tmp_path / "new" / "config.json"
    config = json.loads(config_path.read_text())
    config["vision_config"].update(OLD_TOWER)
    config_path.write_text(json.dumps(config))
    with pytest.raises((ModelLoadError, RuntimeError)):
        assemble_tiny_vlm(lm_dir, tmp_path / "new")
    config_path.write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ModelLoadError, match="vision_config"):
        shipped_vision_config(tmp_path / "new")


def test_processor_and_image_pooling_of_the_new_tower(lm_dir, tmp_path):
    """16 image tokens per 48×48 image; capture(pooling="image") is the mean over those 16
    positions of each head's o_proj input (read by a hook here)."""
    _shipped(lm_dir, tmp_path / "new")
    loaded = load_model(assemble_tiny_vlm(lm_dir, tmp_path / "new"))
    images = [image.resize((48, 48)) for image in random_images(3, seed=4)]
    prompts = [vlm_prompt("w1 w2 w3")] * 3  # one length: no padding to line up
    inputs = loaded.processor(images=images, text=prompts, return_tensors="pt")
    image_id = loaded.model.config.image_token_id
    is_image = inputs["input_ids"] == image_id  # [B, T]
    assert is_image.sum(-1).tolist() == [N_IMAGE_TOKENS] * 3
    assert tuple(inputs["pixel_values"].shape) == (3, 3, 48, 48)
    text_only = loaded.tokenizer(prompts[0].replace(IMAGE_TOKEN, "")).input_ids
    assert inputs["input_ids"].shape[1] == len(text_only) + N_IMAGE_TOKENS

    activations = capture(
        LoadedModel(loaded.model, loaded.tokenizer, "tiny-vlm-test", loaded.processor),
        prompts,
        images=images,
        pooling="image",
        progress=False,
    )
    sites = AttentionSites(loaded.model)
    seen = out_proj_inputs(loaded.model, inputs)
    for layer in range(sites.n_layers):
        z = seen[layer]  # [B, T, n_heads * head_dim]
        pooled = torch.stack([z[b, is_image[b]].mean(0) for b in range(len(images))])
        expected = pooled.view(len(images), sites.n_heads, sites.head_dim)
        torch.testing.assert_close(activations.pooled[:, layer], expected, atol=1e-5, rtol=1e-4)
