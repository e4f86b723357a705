"""The same oracles on the real embedded SmolLM2-135M-Instruct (slow: loads the model)."""

from __future__ import annotations

import pytest
import torch

from headpursuit import (
    AttentionSites,
    Head,
    capture,
    head_somp,
    logit_lens,
    resolve_concept,
    somp,
    steer,
)
from headpursuit.activations.capture import encode_batch, pooling_positions
from headpursuit.activations.prompts import format_prompts
from oracle import textbook_somp

pytestmark = pytest.mark.slow

PROMPTS = [
    "What colour is a ripe banana?",
    "Which country has Lima as its capital?",
    "Name three months of the year.",
    "How many legs does a spider have?",
    "The Eiffel Tower is in which city?",
    "Write a sentence about a red car.",
    "What is seven times eight?",
    "Who wrote Romeo and Juliet?",
    "What language is spoken in Brazil?",
    "Describe the colour of the sea.",
    "Which day comes after Tuesday?",
    "What is the largest planet?",
]


@pytest.fixture(scope="module")
def real(smollm):
    sites = AttentionSites(smollm.model)
    acts = capture(smollm, PROMPTS, chat=True, batch_size=5, progress=False)
    return smollm, sites, acts


def test_sites_of_the_real_model(real):
    _, sites, acts = real
    assert (sites.n_layers, sites.n_heads, sites.head_dim, sites.d_model) == (30, 9, 64, 576)
    assert acts.pooled.shape == (12, 30, 9, 64)
    assert sites.unembedding().shape == (49152, 576)


def test_contributions_sum_to_o_proj_output(real):
    loaded, sites, _ = real
    acts = capture(loaded, PROMPTS[3:4], chat=True, pooling="all", progress=False)
    outputs = {}
    handles = [
        site.out_proj.register_forward_hook(
            lambda m, a, out, i=site.index: outputs.__setitem__(i, out[0].mean(0))
        )
        for site in sites.layers
    ]
    try:
        text = loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": PROMPTS[3]}], add_generation_prompt=True, tokenize=False
        )
        with torch.no_grad():
            loaded.model(**loaded.tokenizer([text], return_tensors="pt"))
    finally:
        for handle in handles:
            handle.remove()
    for layer in (0, 14, 29):
        total = sum(acts.residual(sites, layer, h)[0] for h in range(9))
        relative = (total - outputs[layer]).norm() / outputs[layer].norm()
        assert relative < 1e-5


def test_mean_pooling_covers_exactly_the_users_text_in_the_chat_template(real):
    loaded, _, _ = real
    texts = format_prompts(loaded.tokenizer, PROMPTS, chat=True)
    assert "system" in texts[0]  # SmolLM2's template adds a system turn
    batch = encode_batch(loaded, texts, None, 512, chat=True, contents=list(PROMPTS))
    chosen = pooling_positions(batch, "mean", None)
    for row, prompt in enumerate(PROMPTS):
        ids = batch["input_ids"][row][chosen[row]]
        assert loaded.tokenizer.decode(ids).strip() == prompt
    # "all" keeps the scaffolding: many more positions.
    assert (pooling_positions(batch, "all", None).sum(1) > chosen.sum(1) + 20).all()


def test_fast_somp_matches_textbook_on_real_activations(real):
    _, sites, acts = real
    heads = [Head(0, 4), Head(12, 3), Head(23, 4), Head(29, 7)]
    dictionary = sites.unembedding()
    fast = head_somp(acts, sites, dictionary, 6, heads=heads)
    for row, head in enumerate(heads):
        support, evr, _ = textbook_somp(acts.residual(sites, *head), dictionary, 6)
        assert fast.support[row].tolist() == support, head
        assert max(abs(a - b) for a, b in zip(fast.evr[row].tolist(), evr, strict=True)) < 1e-5


def test_one_somp_step_on_one_sample_is_the_logit_lens(real):
    _, sites, acts = real
    dictionary = sites.unembedding()
    checked = 0
    for layer, head in [(20, 1), (25, 6), (29, 2)]:
        for sample in range(4):
            signal = acts.residual(sites, layer, head)[sample : sample + 1]
            one = somp(signal, dictionary, 1, center=False)
            logits = signal @ torch.nn.functional.normalize(dictionary, dim=1).T
            top, _ = logit_lens(signal, dictionary, per_sample=1, normalize=True)
            assert int(one.support[0, 0]) == int(logits.abs().argmax())
            if logits.max() > -logits.min():
                assert int(one.support[0, 0]) == int(top[0, 0])
                checked += 1
    assert checked > 0


def test_alpha_one_generation_is_unchanged_and_flip_changes_it(real):
    loaded, sites, _ = real
    text = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    inputs = loaded.tokenizer([text], return_tensors="pt")
    settings = dict(max_new_tokens=8, do_sample=False)
    plain = loaded.model.generate(**inputs, **settings)
    every_head = [Head(l, h) for l in range(30) for h in range(9)]
    with steer(loaded.model, every_head, alpha=1.0, sites=sites):
        same = loaded.model.generate(**inputs, **settings)
    assert torch.equal(plain, same)
    assert "Paris" in loaded.tokenizer.decode(plain[0])
    with steer(loaded.model, [Head(l, h) for l in range(20, 30) for h in range(9)], alpha=-1.0):
        flipped = loaded.model.generate(**inputs, **settings)
    assert not torch.equal(plain, flipped)


def test_builtin_concepts_resolve_on_the_real_tokenizer(real):
    loaded, _, _ = real
    colors = resolve_concept(loaded.tokenizer, "colors")
    red = loaded.tokenizer.encode(" red", add_special_tokens=False)
    assert len(red) == 1 and red[0] in colors.token_ids
    countries = resolve_concept(loaded.tokenizer, "countries")
    assert "France" in countries.words
    assert any("Islands" in word for word in countries.dropped)
