"""Adapters: the declarative table and its errors."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from headpursuit import (
    ARCHITECTURES,
    ArchitectureSpec,
    AttentionSites,
    UnsupportedArchitectureError,
    register_architecture,
)


def test_unknown_architecture_names_model_type_and_fix():
    loaded = tiny_model("qwen2")
    saved = ARCHITECTURES.pop("qwen2")
    try:
        with pytest.raises(UnsupportedArchitectureError, match="register_architecture\\('qwen2'"):
            AttentionSites(loaded.model)
    finally:
        ARCHITECTURES["qwen2"] = saved


def test_wrong_module_path_is_named():
    loaded = tiny_model("qwen2")
    saved = ARCHITECTURES["qwen2"]
    register_architecture("qwen2", ArchitectureSpec(out_proj="attention.output"))
    try:
        with pytest.raises(UnsupportedArchitectureError, match=r"'attention\.output'"):
            AttentionSites(loaded.model)
    finally:
        register_architecture("qwen2", saved)


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
