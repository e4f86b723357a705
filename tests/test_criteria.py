"""The ranking criteria against explicit recomputations: textbook SOMP EVRs of explicitly
drawn random dictionaries, and a hand count of each sample's top logits."""

from __future__ import annotations

import pytest
import torch

from conftest import random_prompts, tiny_model
from headpursuit import AttentionSites, Head, capture, rank_heads
from headpursuit.ranking.criteria import logit_lens_top_tokens
from oracle import textbook_somp

TOKENS = [5, 9, 40, 41, 77, 100]
HEADS = [Head(0, 0), Head(1, 3), Head(2, 5)]


@pytest.fixture(scope="module")
def setup():
    loaded = tiny_model("llama_gqa")
    sites = AttentionSites(loaded.model)
    acts = capture(loaded, random_prompts(12), progress=False)
    return acts, sites


def test_specificity_is_evr_minus_the_mean_of_explicit_random_dictionary_evrs(setup):
    acts, sites = setup
    pool = list(range(3, 120))
    ranking = rank_heads(
        acts,
        sites,
        TOKENS,
        criterion="specificity",
        n_atoms=3,
        n_random=4,
        random_pool=pool,
        seed=7,
    )
    unembedding = sites.unembedding()
    # The documented draw: random dictionary r takes the first len(TOKENS) entries of a
    # permutation seeded with seed + r of the pool without the concept's tokens.
    candidates = torch.tensor(sorted(set(pool) - set(TOKENS)))
    draws = []
    for r in range(4):
        generator = torch.Generator().manual_seed(7 + r)
        draws.append(candidates[torch.randperm(len(candidates), generator=generator)[:6]])
    assert all(not set(d.tolist()) & set(TOKENS) for d in draws)
    for head in HEADS:
        signals = acts.residual(sites, *head)
        concept_evr = textbook_somp(signals, unembedding[TOKENS], 3)[1][-1]
        random_evrs = [textbook_somp(signals, unembedding[d], 3)[1][-1] for d in draws]
        assert max(random_evrs) - min(random_evrs) > 1e-4  # the draws really differ
        expected = concept_evr - sum(random_evrs) / len(random_evrs)
        assert ranking.scores[head] == pytest.approx(expected, abs=1e-5)
        assert ranking.evr[head] == pytest.approx(concept_evr, abs=1e-5)


def test_logit_lens_is_the_share_of_concept_tokens_among_each_samples_top_five(setup):
    acts, sites = setup
    ranking = rank_heads(acts, sites, TOKENS, criterion="logit_lens")
    unembedding = sites.unembedding().double()
    for head in HEADS:
        contributions = acts.residual(sites, *head).double()  # [n, d]
        hits = 0
        for sample in contributions:
            logits = (unembedding @ sample).tolist()
            top5 = sorted(range(len(logits)), key=lambda t: -logits[t])[:5]
            hits += sum(t in TOKENS for t in top5)
        assert ranking.scores[head] == pytest.approx(hits / (5 * acts.n_samples), abs=1e-12)
    # The top tokens do not depend on the concept: computed once, they give the same scores.
    top = logit_lens_top_tokens(acts, sites, sites.unembedding())
    again = rank_heads(acts, sites, TOKENS, criterion="logit_lens", lens_top_tokens=top)
    assert again.scores.tolist() == ranking.scores.tolist()
    # Some head must see concept tokens at all, or the comparison above is vacuous.
    planted = rank_heads(acts, sites, list(range(0, 64)), criterion="logit_lens")
    assert float(planted.scores.max()) > 0


def test_a_layer_window_excludes_heads_outside_it_from_the_top(setup):
    acts, sites = setup
    ranking = rank_heads(acts, sites, TOKENS, criterion="evr", layers=(1, 1))
    assert {h.layer for h in ranking.top(4)} == {1}
    unrestricted = rank_heads(acts, sites, TOKENS, criterion="evr")
    assert ranking.evr.tolist() == unrestricted.evr.tolist()
