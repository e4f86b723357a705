"""Ranking, top-k, matched controls, Jaccard; ranking files round-trip."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from conftest import random_prompts, tiny_model
from headpursuit import (
    ArtifactError,
    AttentionSites,
    Head,
    HeadRanking,
    InputError,
    as_heads,
    capture,
    draw_controls,
    head_somp,
    jaccard,
    matched_controls,
    parse_head,
    rank_heads,
)
from oracle import textbook_somp


@pytest.fixture(scope="module")
def ranked():
    loaded = tiny_model("llama_gqa")
    sites = AttentionSites(loaded.model)
    acts = capture(loaded, random_prompts(12), progress=False)
    tokens = [5, 9, 40, 41, 77, 100]
    ranking = rank_heads(acts, sites, tokens, criterion="evr", concept="toy", n_atoms=3)
    return acts, sites, tokens, ranking


def test_ranking_uses_the_restricted_somp_evr(ranked):
    acts, sites, tokens, ranking = ranked
    restricted = sites.unembedding()[tokens]
    for head in [Head(0, 0), Head(2, 5)]:
        support, evr, _ = textbook_somp(acts.residual(sites, *head), restricted, 3)
        assert ranking.evr[head] == pytest.approx(evr[-1], abs=1e-6)
        assert ranking.support[head].tolist() == [tokens[i] for i in support]
    best = ranking.top(3)
    assert all(ranking.scores[best[0]] >= ranking.scores[h] for h in ranking.order())
    assert len(set(ranking.order())) == 18


def test_head_somp_on_a_subset_matches_the_full_run(ranked):
    acts, sites, _, _ = ranked
    dictionary = sites.unembedding()
    subset = [Head(1, 2), Head(0, 4)]
    part = head_somp(acts, sites, dictionary, 4, heads=subset)
    full = head_somp(acts, sites, dictionary, 4)
    assert part.support.tolist() == full.support[[1 * 6 + 2, 4]].tolist()


def test_top_k_out_of_range(ranked):
    ranking = ranked[3]
    with pytest.raises(ValueError, match="between 1 and 18"):
        ranking.top(19)
    with pytest.raises(ValueError, match="between 1 and 18"):
        ranking.top(0)


def test_ranking_files_round_trip(ranked, tmp_path):
    ranking = ranked[3]
    back = HeadRanking.load(ranking.save(tmp_path / "r.json"))
    assert back.order() == ranking.order()
    assert torch.equal(back.support, ranking.support)
    frame = HeadRanking.to_frame(ranking)
    assert list(frame["head"][:3]) == [str(h) for h in ranking.top(3)]
    with pytest.raises(InputError, match="CSV is an export"):
        ranking.save(tmp_path / "r.csv")
    assert not (tmp_path / "r.csv").exists()
    (tmp_path / "other.json").write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(ArtifactError, match=r"not a headpursuit\.ranking artifact"):
        HeadRanking.load(tmp_path / "other.json")
    windowed = HeadRanking.load(ranking.with_window((1, 2)).save(tmp_path / "w.json"))
    assert windowed.layers == (1, 2) and windowed.order() == ranking.with_window((1, 2)).order()
    assert all(h.layer >= 1 for h in windowed.order()) and len(windowed.order()) == 12


@pytest.mark.parametrize("seed", range(5))
def test_matched_controls(seed):
    selected = [Head(0, 1), Head(0, 2), Head(3, 0), Head(7, 4)]
    controls = matched_controls(selected, 8, 6, seed=seed)
    assert Counter(h.layer for h in controls) == Counter(h.layer for h in selected)
    assert not set(controls) & set(selected)
    assert len(set(controls)) == len(controls)
    assert controls == matched_controls(selected, 8, 6, seed=seed)


def test_matched_controls_differ_across_seeds_and_fail_when_impossible():
    selected = [Head(2, h) for h in range(3)]
    assert len({tuple(matched_controls(selected, 4, 9, seed=s)) for s in range(10)}) > 1
    with pytest.raises(ValueError, match="Layer 2"):
        matched_controls([Head(2, h) for h in range(5)], 4, 9)


def test_jaccard_and_head_parsing():
    assert jaccard([Head(0, 1), Head(1, 1)], [Head(1, 1), Head(2, 2)]) == pytest.approx(1 / 3)
    assert jaccard([], []) == 1.0
    assert parse_head("L12H3") == Head(12, 3) == parse_head("12.3")
    with pytest.raises(ValueError, match="L12H3"):
        parse_head("twelve")
    with pytest.raises(InputError, match="non-negative"):
        as_heads([(-1, 2)])
    assert as_heads([(1, 2), "L1H2", Head(3, 0)]) == [Head(1, 2), Head(3, 0)]


def test_matched_controls_can_borrow_from_nearest_layers():
    selected = [Head(2, h) for h in range(5)] + [Head(0, 0)]
    draw = draw_controls(selected, 4, 6, seed=1)
    controls = draw.heads
    assert draw.borrowed == {2: 4}
    assert len(controls) == 6 and not set(controls) & set(selected)
    assert Counter(h.layer for h in controls)[2] == 1  # the one free head of layer 2
    assert controls[0].layer == 0  # layer 0 matched as usual
    assert all(abs(h.layer - 2) == 1 for h in controls[2:])  # the 4 others: layers 1 and 3
