"""Capture on tiny random-init models: per-head contributions sum to the module output."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import ARCHITECTURE_NAMES, random_images, random_prompts, tiny_model
from headpursuit import (
    Activations,
    ArtifactError,
    AttentionSites,
    InputError,
    capture,
    image_token_id,
)


def _pooled_module_outputs(loaded, prompts, images, pooling):
    """Oracle: each prompt alone (no padding), hooks on the modules that feed the residual."""
    sites = AttentionSites(loaded.model)
    outputs = torch.zeros(len(prompts), sites.n_layers, sites.d_model)
    current = {}
    handles = [
        site.output_module.register_forward_hook(
            lambda m, a, out, layer=site.index: current.__setitem__(layer, out[0].float())
        )
        for site in sites.layers
    ]
    try:
        for row, prompt in enumerate(prompts):
            if images is None:
                inputs = loaded.tokenizer([prompt], return_tensors="pt")
            else:
                inputs = loaded.processor(images=[images[row]], text=[prompt], return_tensors="pt")
            with torch.no_grad():
                loaded.model(**inputs)
            ids = inputs["input_ids"][0]
            if pooling == "image":
                mask = ids == image_token_id(loaded)
            elif pooling == "last":
                mask = torch.arange(len(ids)) == len(ids) - 1
            else:
                mask = torch.ones(len(ids), dtype=torch.bool)
            for layer, out in current.items():  # what the residual stream receives: c * out
                outputs[row, layer] = sites.residual_scale(layer) * out[mask].mean(0)
    finally:
        for handle in handles:
            handle.remove()
    return sites, outputs


@pytest.mark.parametrize("name", ARCHITECTURE_NAMES)
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_head_contributions_sum_to_module_output(name, pooling):
    loaded = tiny_model(name)
    is_vlm = name == "llava"
    if is_vlm and pooling == "last":
        pooling = "image"
    prompts = random_prompts(7, image=is_vlm)
    images = random_images(7) if is_vlm else None
    acts = capture(loaded, prompts, images=images, pooling=pooling, batch_size=3, progress=False)
    sites, expected = _pooled_module_outputs(loaded, prompts, images, pooling)
    assert acts.pooled.shape == (7, sites.n_layers, sites.n_heads, sites.head_dim)
    for layer in range(sites.n_layers):
        total = sum(acts.residual(sites, layer, h) for h in range(sites.n_heads))
        bias = sites.output_bias(layer)
        if bias is not None:
            total = total + bias
        scale = expected[:, layer].norm(dim=-1, keepdim=True)
        assert ((total - expected[:, layer]).norm(dim=-1, keepdim=True) / scale).max() < 1e-5


@pytest.mark.parametrize("name", ARCHITECTURE_NAMES)
def test_each_head_alone_matches_its_contribution(name):
    """Per-head oracle: zero every other head's slice at the projection's input (by hand, in
    the test), run the projection, and compare with ``residual()`` at the last token.

    Models with a post-attention norm: with the norm's per-token scale frozen at the full
    output a_t, the head's share x_h is scaled like a_t, so contribution ⊙ a_t = norm(a_t) ⊙ x_h.
    A wrong head split, slice order or gain fails here even though the heads' sum would not.
    """
    loaded = tiny_model(name)
    is_vlm = name == "llava"
    prompts = random_prompts(4, seed=2, image=is_vlm)
    images = random_images(4, seed=2) if is_vlm else None
    acts = capture(loaded, prompts, images=images, pooling="last", progress=False)
    sites = AttentionSites(loaded.model)
    layer, dh = sites.n_layers - 1, sites.head_dim
    site = sites.layers[layer]
    # Before the hooks go in: reading a post-norm's gain calls the norm module.
    contributions = [acts.residual(sites, layer, head) for head in range(sites.n_heads)]
    seen = {}
    handles = [site.out_proj.register_forward_hook(lambda m, a, o: seen.update(z=a[0], a=o))]
    if site.post_norm is not None:
        handles.append(site.post_norm.register_forward_hook(lambda m, a, o: seen.update(normed=o)))
    try:
        for row, prompt in enumerate(prompts):
            if images is None:
                inputs = loaded.tokenizer([prompt], return_tensors="pt")
            else:
                inputs = loaded.processor(images=[images[row]], text=[prompt], return_tensors="pt")
            with torch.no_grad():
                loaded.model(**inputs)
            z, a = seen["z"][0, -1], seen["a"][0, -1]
            bias = getattr(site.out_proj, "bias", None)
            for head in range(sites.n_heads):
                alone = torch.zeros_like(z)
                alone[head * dh : (head + 1) * dh] = z[head * dh : (head + 1) * dh]
                with torch.no_grad():
                    x_h = site.out_proj(alone[None])[0] - (0 if bias is None else bias)
                got = contributions[head][row]
                if site.post_norm is None:
                    torch.testing.assert_close(got, x_h, rtol=1e-4, atol=1e-5)
                else:
                    normed = seen["normed"][0, -1]
                    torch.testing.assert_close(got * a, normed * x_h, rtol=1e-4, atol=1e-5)
    finally:
        for handle in handles:
            handle.remove()


def test_post_norm_is_not_ignored():
    """Gemma-3's post-attention norm changes the answer: contributions without it are wrong."""
    loaded = tiny_model("gemma3")
    sites = AttentionSites(loaded.model)
    assert sites.layers[0].post_norm is not None
    gain = sites.post_norm_gain(0)
    assert not torch.allclose(gain, torch.ones_like(gain))
    llama_sites = AttentionSites(tiny_model("llama_gqa").model)
    assert llama_sites.layers[0].post_norm is None  # Llama's post_attention_layernorm is pre-MLP


def test_custom_mask_pooling_matches_last_token():
    loaded = tiny_model("llama_gqa")
    prompts = random_prompts(5, seed=3)
    lengths = [len(loaded.tokenizer(p)["input_ids"]) for p in prompts]
    masks = [torch.arange(n) == n - 1 for n in lengths]
    by_mask = capture(loaded, prompts, masks=masks, batch_size=2, progress=False)
    by_last = capture(loaded, prompts, pooling="last", batch_size=4, progress=False)
    torch.testing.assert_close(by_mask.pooled, by_last.pooled)
    assert by_mask.pooling == "mask"


def test_padding_and_batch_size_do_not_change_the_result():
    loaded = tiny_model("qwen2")
    prompts = random_prompts(9, seed=1)
    one = capture(loaded, prompts, batch_size=1, progress=False)
    many = capture(loaded, prompts, batch_size=4, progress=False)
    torch.testing.assert_close(one.pooled, many.pooled, rtol=1e-5, atol=1e-6)


def test_save_load_round_trip_is_exact(tmp_path):
    loaded = tiny_model("gpt2")
    acts = capture(loaded, random_prompts(4), progress=False)
    path = acts.save(tmp_path / "acts.safetensors")
    back = Activations.load(path)
    assert torch.equal(back.pooled, acts.pooled)
    for attribute in (
        "model_id",
        "fingerprint",
        "pooling",
        "d_model",
        "prompts",
        "library_version",
    ):
        assert getattr(back, attribute) == getattr(acts, attribute)
    assert [p.name for p in tmp_path.iterdir()] == ["acts.safetensors"]


def test_load_rejects_other_files(tmp_path):
    bogus = tmp_path / "notes.safetensors"
    bogus.write_text("not a tensor file")
    with pytest.raises(ArtifactError, match="not a headpursuit activations file"):
        Activations.load(bogus)
    with pytest.raises(InputError, match="No activations file"):
        Activations.load(tmp_path / "missing.safetensors")


def test_activations_from_another_model_are_refused():
    acts = capture(tiny_model("gpt2"), random_prompts(2), progress=False)
    other = AttentionSites(tiny_model("llama_gqa").model)
    with pytest.raises(ArtifactError, match="do not fit this model"):
        acts.residual(other, 0, 0)
    same_shape = AttentionSites(tiny_model("gpt2").model)
    with pytest.raises(ArtifactError, match="not from this model"):
        acts.check_model(same_shape, fingerprint="0" * 16)


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    acts = capture(tiny_model("gpt2"), random_prompts(2), progress=False)

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["safetensors.torch"], "save_file", explode)
    with pytest.raises(KeyboardInterrupt):
        acts.save(tmp_path / "acts.safetensors")
    assert list(tmp_path.iterdir()) == []


def _bos_tokenizer():
    """A word-level tokenizer that adds [BOS] itself, with a template that also writes it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from conftest import WORDS

    vocab = {"[PAD]": 0, "[EOS]": 1, "[BOS]": 2, "<user>": 3, "<bot>": 4}
    for word in WORDS:
        vocab[word] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="[PAD]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[BOS] $A", special_tokens=[("[BOS]", 2)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        eos_token="[EOS]",
        bos_token="[BOS]",
        unk_token="[PAD]",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<user>", "<bot>"]})
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}<user> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<bot>{% endif %}"
    )
    return tokenizer


def test_bos_is_never_added_twice_and_scaffolding_is_not_pooled():
    from headpursuit.activations.capture import encode_batch, pooling_positions
    from headpursuit.activations.prompts import format_prompts

    loaded = tiny_model("llama_gqa")
    loaded.tokenizer = _bos_tokenizer()
    prompts = ["w1 w2 w3", "red blue"]
    texts = format_prompts(loaded.tokenizer, prompts, chat=True)
    batch = encode_batch(loaded, texts, None, 64, chat=True, contents=prompts)
    ids = batch["input_ids"]
    assert (ids[:, 0] == 2).all() and (ids[:, 1] == 3).all()  # one [BOS], then <user>
    plain = encode_batch(loaded, prompts, None, 64)
    assert (plain["input_ids"][:, 0] == 2).all() and (plain["input_ids"][:, 1] != 2).all()
    chosen = pooling_positions(batch, "mean", None)
    for row, prompt in enumerate(prompts):
        assert loaded.tokenizer.decode(ids[row][chosen[row]]) == prompt
    chosen_plain = pooling_positions(plain, "mean", None)
    assert not chosen_plain[:, 0].any()  # BOS is a special token: never pooled
    acts = capture(loaded, prompts, chat=True, progress=False)
    assert acts.pooled.abs().sum() > 0


def test_a_model_without_a_chat_template_gets_plain_prompts_and_a_notice():
    from headpursuit.activations.prompts import NoChatTemplateWarning

    loaded = tiny_model("qwen2")
    assert not loaded.tokenizer.chat_template
    prompts = random_prompts(3, seed=4)
    with pytest.warns(NoChatTemplateWarning, match="no chat template"):
        chatted = capture(loaded, prompts, chat=True, progress=False)
    plain = capture(loaded, prompts, chat=False, progress=False)
    assert torch.equal(chatted.pooled, plain.pooled)
