"""The language tasks end to end on the real embedded SmolLM2, on tiny inputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from headpursuit import AttentionSites, capture, steer
from headpursuit.evaluation.language import data
from headpursuit.evaluation.language.selection import (
    heads_for_percent,
    parse_intervention,
    select_ranking,
)
from headpursuit.evaluation.language.wordfreq import run_wordfreq
from headpursuit.steering.generation import generate


def test_parse_intervention_and_percent():
    assert parse_intervention("mean") == ("mean", 1.0)
    assert parse_intervention("-0.5") == ("scale", -0.5)
    with pytest.raises(ValueError):
        parse_intervention("flip")
    assert [heads_for_percent(p, 270) for p in (1, 2, 3)] == [3, 5, 8]
    assert heads_for_percent(0.01, 270) == 1


def test_bundled_data_is_disjoint_and_readers_work(tmp_path):
    select_rows, eval_rows = data.split_countries(0)
    assert not {r["name"] for r in select_rows} & {r["name"] for r in eval_rows}
    assert data.split_countries(0) == (select_rows, eval_rows)
    questions = data.capital_to_country(eval_rows) + data.nontarget_questions(eval_rows)
    assert any(q.target for q in questions) and any(not q.target for q in questions)
    texts = set(data.selection_texts_countries(select_rows))
    assert not texts & {q.question for q in questions}
    trivia = tmp_path / "tqa.jsonl"
    trivia.write_text(
        json.dumps({"question": "Where is Lyon?", "answer": {"value": "France", "aliases": []}})
        + "\n"
        + json.dumps({"question": "2+2?", "answers": ["4", "four"]})
        + "\n"
    )
    read = data.read_triviaqa(trivia, target_answers=["France"])
    assert [q.target for q in read] == [True, False] and read[1].answers == ["4", "four"]
    rtp = tmp_path / "rtp.jsonl"
    rtp.write_text(json.dumps({"prompt": {"text": "So I said"}, "continuation": {}}) + "\n")
    assert data.read_prompts(rtp) == ["So I said"]
    assert "ass" in data.concept_words("profanity")


@pytest.mark.slow
def test_selection_protocols_and_window(smollm):
    sites = AttentionSites(smollm.model)
    texts = data.selection_texts_countries(data.split_countries(0)[0][:4])
    acts = capture(smollm, texts, progress=False)
    token_ids = smollm.tokenizer.encode(" France Germany Japan", add_special_tokens=False)
    for method in ("evr", "specificity", "logit_lens"):
        ranking = select_ranking(
            method, acts, sites, token_ids, window=(10, 29), n_random=1, n_atoms=2
        )
        assert ranking.scores.shape == (sites.n_layers, sites.n_heads)
        assert all(10 <= h.layer <= 29 for h in ranking.top(8))
        assert torch.isfinite(ranking.scores).all() and ranking.layers == (10, 29)
    plain = select_ranking("evr", acts, sites, token_ids, n_atoms=2)
    assert plain.with_window(None).order() == plain.order()


@pytest.mark.slow
def test_generate_left_pads_and_alpha_one_is_identity(smollm):
    prompts = ["What is 2 plus 2?", "Name a colour of the sky on a clear day, please."]
    _, alone = generate(smollm, prompts[:1], max_new_tokens=6)
    _, batched = generate(smollm, prompts, max_new_tokens=6)
    assert batched[0] == alone[0]
    with steer(smollm.model, [(20, 1), (25, 3)], 1.0):
        _, same = generate(smollm, prompts, max_new_tokens=6)
    assert same == batched


@pytest.mark.slow
def test_run_wordfreq_and_amplify_tiny(smollm, tmp_path):
    from headpursuit.evaluation.language.amplify import run_amplify

    prompts = data.NEUTRAL_PROMPTS[:4]
    result = run_wordfreq(
        smollm,
        "colors",
        prompts=prompts,
        ks=[2],
        interventions=["1", "mean"],
        control_seeds=[0],
        n_random=1,
        max_new_tokens=8,
        output=tmp_path / "wf.json",
    )
    frame = result.to_frame()
    base = frame[frame.arm == "baseline"].iloc[0]
    same = frame[frame.intervention == "1"]
    assert (same["all_freq"] == base["all_freq"]).all()
    assert not set(result.config["heldout_words"]) & set(result.config["selection_words"])
    amplified = run_amplify(
        smollm,
        "colors",
        prompts=prompts,
        ks=[1],
        alphas=["1"],
        control_seeds=[0],
        max_new_tokens=8,
    )
    frame = amplified.to_frame()
    assert "perplexity" in frame.columns
    assert (frame["perplexity_norm"] == 1.0).all()


@pytest.mark.slow
def test_continuation_perplexity_matches_a_hand_computation(smollm):
    from headpursuit.evaluation.language.metrics import continuation_perplexity

    prompts = ["The sky is", "Two plus two is"]
    continuations = [" blue today.", " four."]
    nll, count = 0.0, 0
    for prompt, continuation in zip(prompts, continuations, strict=True):
        p = smollm.tokenizer.encode(prompt, add_special_tokens=False)
        c = smollm.tokenizer.encode(continuation, add_special_tokens=False)
        with torch.no_grad():
            logits = smollm.model(input_ids=torch.tensor([p + c])).logits[0]
        for offset, token in enumerate(c):  # token p+offset is predicted at p+offset-1
            row = torch.log_softmax(logits[len(p) + offset - 1].double(), -1)
            nll -= float(row[token])
            count += 1
    expected = math.exp(nll / count)
    assert continuation_perplexity(smollm, prompts, continuations) == pytest.approx(
        expected, rel=1e-4
    )


def test_random_controls_fall_back_to_nearest_layers():
    from headpursuit import Head
    from headpursuit.evaluation.language.selection import random_controls

    selected = [Head(23, i) for i in range(5)] + [Head(29, 0)]
    controls = random_controls(selected, 30, 9, seed=1)
    assert len(set(controls)) == len(selected) and not set(controls) & set(selected)
    assert sum(h.layer == 23 for h in controls) == 4 and sum(h.layer == 29 for h in controls) == 1
    assert {h.layer for h in controls} <= {22, 23, 24, 29}
    assert random_controls(selected[:2], 30, 9, seed=1) == random_controls(
        selected[:2], 30, 9, seed=1
    )
