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


def _out_proj_io(loaded, inputs, layer: int):
    """(input, output) of one layer's attention output projection in a forward pass."""
    site = AttentionSites(loaded.model).layers[layer]
    seen = {}

    def record(module, args, output):
        seen["z"], seen["out"] = args[0].detach().clone(), output.detach().clone()

    handle = site.out_proj.register_forward_hook(record)
    try:
        _logits(loaded, inputs)
    finally:
        handle.remove()
    return site.out_proj, seen["z"], seen["out"]


@pytest.mark.parametrize("name", ARCHITECTURE_NAMES)
@pytest.mark.parametrize("alpha", [1.0, 3.0, -1.0])
def test_alpha_scales_exactly_one_heads_slice(name, alpha):
    """Oracle: the projection applied to its own input with the head's columns scaled by hand."""
    loaded = tiny_model(name)
    inputs = _inputs(loaded)
    sites = AttentionSites(loaded.model)
    layer, head, dh = 1, sites.n_heads - 1, sites.head_dim
    module, z, plain_out = _out_proj_io(loaded, inputs, layer)
    edited = z.clone()
    edited[..., head * dh : (head + 1) * dh] *= alpha
    with torch.no_grad():
        expected = module(edited)
    with steer(loaded.model, [Head(layer, head)], alpha=alpha):
        _, _, steered_out = _out_proj_io(loaded, inputs, layer)
    torch.testing.assert_close(steered_out, expected, rtol=1e-5, atol=1e-6)
    if alpha == 1.0:
        assert torch.equal(steered_out, plain_out)
    else:
        assert not torch.allclose(steered_out, plain_out)


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
    # A plain forward pass has no generated positions: nothing changes.
    assert torch.equal(generated_only, _logits(loaded, inputs))
    assert not torch.equal(everywhere, generated_only)


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
    # The hooks fire on the generated positions: later tokens change.
    assert not torch.equal(generated_only, plain)


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


def test_replacement_and_edit_functions_and_bad_heads():
    loaded = tiny_model("gpt2")
    inputs = _inputs(loaded)
    sites = AttentionSites(loaded.model)
    generator = torch.Generator().manual_seed(3)
    replacement = torch.randn(sites.n_layers, sites.n_heads, sites.head_dim, generator=generator)
    layer, heads, dh = 1, [0, 2], sites.head_dim
    module, z, _ = _out_proj_io(loaded, inputs, layer)
    expected_z = z.clone()
    for h in heads:
        expected_z[..., h * dh : (h + 1) * dh] = 0.5 * replacement[layer, h]
    with torch.no_grad():
        expected = module(expected_z)
    with steer(loaded.model, [Head(layer, h) for h in heads], 0.5, replacement=replacement):
        _, _, replaced = _out_proj_io(loaded, inputs, layer)
    torch.testing.assert_close(replaced, expected, rtol=1e-5, atol=1e-6)

    # Any function of the slice: here, keep only the slice's first coordinate.
    def first_only(part, head_index):
        out = torch.zeros_like(part)
        out[..., 0] = part[..., 0]
        return out

    expected_z = z.clone()
    for h in heads:
        expected_z[..., h * dh + 1 : (h + 1) * dh] = 0
    with torch.no_grad():
        expected = module(expected_z)
    with steer(loaded.model, [(layer, h) for h in heads], edit=first_only):
        _, _, edited = _out_proj_io(loaded, inputs, layer)
    torch.testing.assert_close(edited, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="outside this model"), steer(loaded.model, [Head(9, 0)]):
        pass
    with (
        pytest.raises(ValueError, match="positions"),
        steer(loaded.model, [Head(0, 0)], positions="x"),
    ):
        pass
    with pytest.raises(ValueError, match="finite"), steer(loaded.model, ["L0H0"], float("nan")):
        pass
