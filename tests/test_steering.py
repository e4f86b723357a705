"""Steering on tiny models: α = 1 is a no-op, α = 0 on a layer removes its attention output."""

from __future__ import annotations

import pytest
import torch

from conftest import ARCHITECTURE_NAMES, random_images, random_prompts, tiny_model
from headpursuit import AttentionSites, Head, steer


def _inputs(loaded, n=3, seed=0):
    if loaded.is_vlm:
        return dict(
            loaded.processor(
                images=random_images(n, seed),
                text=random_prompts(n, seed, image=True),
                padding=True,
                return_tensors="pt",
            )
        )
    loaded.tokenizer.padding_side = "right"
    return dict(loaded.tokenizer(random_prompts(n, seed), padding=True, return_tensors="pt"))


def _logits(loaded, inputs):
    with torch.no_grad():
        return loaded.model(**inputs).logits


@pytest.mark.parametrize("name", ARCHITECTURE_NAMES)
def test_alpha_one_is_bit_identical(name):
    loaded = tiny_model(name)
    inputs = _inputs(loaded)
    sites = AttentionSites(loaded.model)
    every_head = [Head(l, h) for l in range(sites.n_layers) for h in range(sites.n_heads)]
    before = _logits(loaded, inputs)
    with steer(loaded.model, every_head, alpha=1.0):
        during = _logits(loaded, inputs)
    assert torch.equal(before, during)


@pytest.mark.parametrize("name", ARCHITECTURE_NAMES)
def test_alpha_zero_on_a_layer_removes_its_attention_output(name):
    loaded = tiny_model(name)
    inputs = _inputs(loaded)
    sites = AttentionSites(loaded.model)
    layer = 1
    site = sites.layers[layer]

    def only_bias(module, args, output):
        bias = getattr(module, "bias", None)
        return torch.zeros_like(output) if bias is None else torch.zeros_like(output) + bias

    handle = site.out_proj.register_forward_hook(only_bias)
    try:
        removed = _logits(loaded, inputs)
    finally:
        handle.remove()
    with steer(loaded.model, [Head(layer, h) for h in range(sites.n_heads)], alpha=0.0):
        ablated = _logits(loaded, inputs)
    torch.testing.assert_close(ablated, removed, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ablated, _logits(loaded, inputs))


def test_flip_changes_logits_and_hooks_are_removed_on_error():
    loaded = tiny_model("llama_gqa")
    inputs = _inputs(loaded)
    before = _logits(loaded, inputs)
    with steer(loaded.model, [Head(2, 0), Head(0, 5)], alpha=-1.0):
        flipped = _logits(loaded, inputs)
    assert not torch.allclose(before, flipped)
    with pytest.raises(RuntimeError, match="boom"), steer(loaded.model, [Head(1, 1)], alpha=5.0):
        raise RuntimeError("boom")
    assert torch.equal(_logits(loaded, inputs), before)
    sites = AttentionSites(loaded.model)
    assert all(not site.out_proj._forward_pre_hooks for site in sites.layers)
    assert not loaded.model._forward_pre_hooks


def test_positions_in_a_plain_forward_pass():
    loaded = tiny_model("qwen2")
    inputs = _inputs(loaded)
    heads = [Head(1, 0), Head(2, 3)]
    with steer(loaded.model, heads, alpha=-1.0):
        everywhere = _logits(loaded, inputs)
    with steer(loaded.model, heads, alpha=-1.0, positions="prompt"):
        prompt_only = _logits(loaded, inputs)
    with steer(loaded.model, heads, alpha=-1.0, positions="generated"):
        generated_only = _logits(loaded, inputs)
    assert torch.equal(prompt_only, everywhere)
    assert torch.equal(generated_only, _logits(loaded, inputs))


def test_positions_during_generation():
    loaded = tiny_model("llama_gqa")
    loaded.tokenizer.padding_side = "left"
    inputs = dict(loaded.tokenizer(random_prompts(2, 5), padding=True, return_tensors="pt"))
    heads = [Head(l, h) for l in range(3) for h in range(6)]
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)

    def generate(**steering):
        if not steering:
            return loaded.model.generate(**inputs, **settings)
        with steer(loaded.model, heads, **steering):
            return loaded.model.generate(**inputs, **settings)

    plain = generate()
    assert torch.equal(generate(alpha=1.0), plain)
    prompt_only, generated_only, everywhere = (
        generate(alpha=0.0, positions=p) for p in ("prompt", "generated", "all")
    )
    # The first new token depends on the prompt positions only.
    assert torch.equal(
        generated_only[:, : inputs["input_ids"].shape[1] + 1],
        plain[:, : inputs["input_ids"].shape[1] + 1],
    )
    assert not torch.equal(prompt_only, plain)
    assert not torch.equal(everywhere, prompt_only)


def test_image_positions_leave_text_only_prompts_unchanged():
    loaded = tiny_model("llava")
    loaded.tokenizer.padding_side = "right"
    text_only = dict(loaded.tokenizer(random_prompts(3, 1), padding=True, return_tensors="pt"))
    every_head = [Head(l, h) for l in range(3) for h in range(4)]
    before = _logits(loaded, text_only)
    with steer(loaded.model, every_head, alpha=-1.0, positions="image"):
        after = _logits(loaded, text_only)
    assert torch.equal(before, after)
    with_image = _inputs(loaded)
    with steer(loaded.model, every_head, alpha=-1.0, positions="image"):
        steered = _logits(loaded, with_image)
    assert not torch.allclose(steered, _logits(loaded, with_image))


def test_mean_replacement_and_bad_heads():
    loaded = tiny_model("gpt2")
    inputs = _inputs(loaded)
    sites = AttentionSites(loaded.model)
    zeros = torch.zeros(sites.n_layers, sites.n_heads, sites.head_dim)
    with steer(
        loaded.model, [Head(1, h) for h in range(sites.n_heads)], alpha=1.0, replacement=zeros
    ):
        replaced = _logits(loaded, inputs)
    with steer(loaded.model, [Head(1, h) for h in range(sites.n_heads)], alpha=0.0):
        ablated = _logits(loaded, inputs)
    torch.testing.assert_close(replaced, ablated)
    with pytest.raises(ValueError, match="outside this model"), steer(loaded.model, [Head(9, 0)]):
        pass
    with (
        pytest.raises(ValueError, match="positions"),
        steer(loaded.model, [Head(0, 0)], positions="x"),
    ):
        pass
