"""Adapters: discovery by structure, the table as verified overrides, refusals and their errors."""

from __future__ import annotations

import pytest
import torch

from conformance import build, one_thread  # noqa: F401 (fixture)
from conftest import random_prompts, tiny_model, tiny_tokenizer
from headpursuit import (
    ARCHITECTURES,
    ArchitectureSpec,
    AttentionSites,
    LoadedModel,
    UnsupportedArchitectureError,
    capture,
    register_architecture,
    steer,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conformance.one_thread


@pytest.fixture
def without_table_entry():
    """Temporarily remove table entries, restoring them afterwards."""
    removed = {}

    def remove(model_type: str) -> None:
        removed[model_type] = ARCHITECTURES.pop(model_type)

    yield remove
    ARCHITECTURES.update(removed)


@pytest.mark.parametrize("name", ["llama_gqa", "qwen2", "gemma3", "gpt2", "llava"])
def test_discovery_finds_what_the_table_says(name, without_table_entry):
    model = tiny_model(name).model
    table = AttentionSites(model)
    without_table_entry(table.model_type)
    found = AttentionSites(model)
    assert found.discovered and not table.discovered
    assert [s.out_proj for s in found.layers] == [s.out_proj for s in table.layers]
    assert [s.post_norm for s in found.layers] == [s.post_norm for s in table.layers]
    assert (found.n_heads, found.head_dim) == (table.n_heads, table.head_dim)
    assert found.spec.out_proj == table.spec.out_proj
    assert found.spec.final_norm == table.spec.final_norm  # the last norm the backbone calls


def test_model_without_attention_is_refused_with_the_fix():
    with pytest.raises(UnsupportedArchitectureError) as error:
        AttentionSites(build("mamba"))
    message = str(error.value)
    assert "'mamba'" in message and "Attention" in message  # what was looked for
    assert "register_architecture('mamba', ArchitectureSpec(out_proj=" in message
    assert error.value.reason == "no list of 2 decoder layers with attention modules"


def test_post_layer_norm_is_refused_naming_the_module_and_the_error():
    with pytest.raises(UnsupportedArchitectureError) as error:
        AttentionSites(build("bert"))  # BERT as a causal LM: LayerNorm after the residual add
    message = str(error.value)
    assert "encoder.layer.0.attention.output.dense" in message
    assert "relative error" in message and "not RMS norms" in message
    assert "register_architecture('bert'" in message


def test_wrong_module_path_is_named(without_table_entry):
    model = tiny_model("qwen2").model
    without_table_entry("qwen2")
    register_architecture("qwen2", ArchitectureSpec(out_proj="attention.output"))
    with pytest.raises(UnsupportedArchitectureError, match=r"'attention\.output'"):
        AttentionSites(model)
    ARCHITECTURES.pop("qwen2")


def test_a_wrong_table_entry_is_caught_by_the_probe(without_table_entry):
    """Registering the MLP's down projection as the attention output must not pass."""
    model = tiny_model("llama_gqa").model
    without_table_entry("llama")
    register_architecture("llama", ArchitectureSpec(out_proj="mlp.down_proj", head_dim=16))
    with pytest.raises(UnsupportedArchitectureError, match="relative error"):
        AttentionSites(model)
    ARCHITECTURES.pop("llama")


def test_gqa_head_count_and_head_dim_from_config():
    sites = AttentionSites(tiny_model("llama_gqa").model)
    assert (sites.n_heads, sites.head_dim, sites.d_model) == (6, 12, 48)  # head_dim != 48 / 6
    maps = sites.head_matrices(0)
    assert maps.shape == (6, 48, 12)
    torch.testing.assert_close(maps[2], sites.output_weight(0)[:, 24:36])


def test_conv1d_weight_is_transposed():
    sites = AttentionSites(tiny_model("gpt2").model)
    assert sites.layers[0].is_conv1d
    assert sites.output_weight(0).shape == (48, 48)
    torch.testing.assert_close(sites.output_weight(0), sites.layers[0].out_proj.weight.T)


def test_llava_backbone_and_unembedding_found():
    loaded = tiny_model("llava")
    sites = AttentionSites(loaded.model)
    assert "vision" not in sites.layers[0].out_proj_name
    assert sites.unembedding().shape == (128, 48)


def test_final_norm_fold_is_an_elementwise_gain():
    sites = AttentionSites(tiny_model("gemma3").model)
    gain = sites.final_norm_gain()
    torch.testing.assert_close(gain, 1.0 + sites.decoder.norm.weight.detach())  # Gemma: 1 + w
    folded = sites.dictionary(fold_final_norm=True)
    torch.testing.assert_close(folded, sites.unembedding() * gain)
    assert torch.equal(sites.dictionary(), sites.unembedding())


def test_granite_residual_multiplier_is_measured():
    """Granite adds ``residual_multiplier * attention``: a table entry without it was wrong."""
    model = build("granite")
    multiplier = model.config.residual_multiplier
    assert multiplier != 1.0  # the conformance builder randomises multipliers
    sites = AttentionSites(model)
    assert sites.residual_scale(0) == pytest.approx(multiplier, rel=1e-6)
    unscaled = sites.output_weight(0).reshape(64, 4, 16).permute(1, 0, 2)
    torch.testing.assert_close(sites.head_matrices(0), multiplier * unscaled)


def test_multi_head_latent_attention_uses_the_value_head_size():
    model = build("deepseek_v3")
    config = model.config
    assert config.v_head_dim != config.qk_nope_head_dim + config.qk_rope_head_dim
    sites = AttentionSites(model)
    assert (sites.n_heads, sites.head_dim) == (config.num_attention_heads, config.v_head_dim)


def _loaded(model) -> LoadedModel:
    return LoadedModel(model=model, tokenizer=tiny_tokenizer(), model_id="tiny")


def test_hybrid_heads_are_indexed_by_attention_layer():
    """Jamba's layer 0 is a Mamba mixer: attention layer 0 is decoder layer 1."""
    model = build("jamba")
    sites = AttentionSites(model)
    assert (sites.n_layers, sites.n_decoder_layers, sites.attention_layers) == (1, 2, [1])
    assert sites.layers[0].decoder_layer == 1 and sites.layers[0].index == 0
    assert ".1." in sites.layers[0].out_proj_name
    assert "decoder layers [1] of 2" in repr(sites)
    loaded = _loaded(model)
    acts = capture(loaded, random_prompts(3), progress=False)
    assert acts.pooled.shape == (3, 1, sites.n_heads, sites.head_dim)
    ids = loaded.tokenizer(random_prompts(1)[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = model(ids).logits
        with steer(model, [(0, 1)], alpha=1.0):
            same = model(ids).logits
        with steer(model, [(0, 1)], alpha=0.0):
            ablated = model(ids).logits
    assert torch.equal(base, same)
    assert not torch.allclose(base, ablated)


def test_layers_with_different_head_sizes_are_padded():
    """Gemma 4: sliding layers have head_dim 16, full-attention layers 32."""
    model = build("gemma4_text")
    sites = AttentionSites(model)
    widths = [site.head_dim for site in sites.layers]
    assert sorted(set(widths)) == [16, 32] and sites.head_dim == 32
    narrow = widths.index(16)
    maps = sites.head_matrices(narrow)
    assert maps.shape == (sites.n_heads, sites.d_model, 32)
    assert torch.count_nonzero(maps[:, :, 16:]) == 0
    acts = capture(_loaded(model), random_prompts(2), progress=False)
    assert torch.count_nonzero(acts.pooled[:, narrow, :, 16:]) == 0
    assert torch.count_nonzero(acts.pooled[:, narrow, :, :16]) > 0
    replacement = torch.zeros(sites.n_layers, sites.n_heads, sites.head_dim)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad(), steer(model, [(narrow, 0)], alpha=1.0, replacement=replacement):
        model(ids)  # a replacement on the padded grid fits the narrow layer
