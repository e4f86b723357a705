"""Rerunning only the layers from the first steered one gives the logits of the full pass."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from headpursuit import AttentionSites, Head, steer
from headpursuit.steering.generation import next_token_logprobs
from headpursuit.steering.prefix import LayerPrefixCache

PROMPTS = ["a b c d e f g", "h", "i j k", "l m n o"]
GROUPS = [[5], [9, 40], [77], [100]]


@pytest.mark.parametrize("name", ["llama_gqa", "qwen2", "gemma3", "gpt2"])
def test_short_passes_equal_full_passes_under_every_intervention(name):
    loaded = tiny_model(name)
    sites = AttentionSites(loaded.model)
    prefix = LayerPrefixCache(loaded, sites)
    last = sites.n_layers - 1
    edits = [
        [Head(last, 0)],
        [Head(last, 1), Head(1, 0)],  # start at layer 1
        [Head(last, 0)],  # again: from the recorded states
        [],
        [Head(0, 1)],  # layer 0: nothing to reuse
    ]
    for heads in edits * 2:
        with steer(loaded.model, heads, -1.0, sites=sites):
            reused = next_token_logprobs(loaded, PROMPTS, GROUPS, batch_size=2, prefix=prefix)
            full = next_token_logprobs(loaded, PROMPTS, GROUPS, batch_size=2)
        torch.testing.assert_close(reused, full, rtol=1e-4, atol=1e-5)
    if name == "gpt2":
        # GPT-2 adds its position embeddings to inputs_embeds inside the model, so a
        # shortened pass differs: the check must catch it and run every pass in full.
        assert prefix.trusted == {1: False, 2: False}
    else:
        assert prefix.trusted == {1: True, 2: True}
        # 6 steered calls above layer 0 x 2 batches; 4 of them record (2 start layers x 2
        # batches), the rest reuse; plus one checking short pass per start layer.
        assert prefix.short_passes == 6 * 2 - 4 + 2


def test_the_first_steered_layer_is_read_from_open_steer_blocks():
    loaded = tiny_model("llama_gqa")
    prefix = LayerPrefixCache(loaded)
    assert prefix.start_layer() == 0
    with steer(loaded.model, [Head(2, 0)]):
        assert prefix.start_layer() == 2
        with steer(loaded.model, [Head(1, 3)]):
            assert prefix.start_layer() == 1
        assert prefix.start_layer() == 2
    assert prefix.start_layer() == 0
