"""Fact-QA scoring: teacher-forced log-probabilities against unpadded forward passes, the
calibrated 'correct' against a hand case, and the whole experiment on the real SmolLM2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import tiny_model
from headpursuit.evaluation.experiment import ExperimentResult
from headpursuit.evaluation.language import facts as fact_data
from headpursuit.evaluation.language.qa import _scores, known_facts, run_qa
from headpursuit.steering.generation import next_token_logprobs


def test_next_token_logprobs_equal_one_unpadded_forward_per_prompt():
    loaded = tiny_model("llama_gqa")
    prompts = ["a b c d e f g", "h", "i j k"]  # different lengths: left padding matters
    groups = [[5], [9, 40], [77]]
    batched = next_token_logprobs(loaded, prompts, groups, batch_size=3)
    for i, prompt in enumerate(prompts):
        ids = loaded.tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = loaded.model(ids).logits[0, -1].double()
        logp = torch.log_softmax(logits, -1)
        expected = [float(torch.logsumexp(logp[g], 0)) for g in groups]
        assert batched[i].tolist() == pytest.approx(expected, abs=1e-4)


def test_calibrated_correct_by_hand():
    answers = fact_data.AnswerSet("colours", ["red", "blue", "green"], [[1], [2], [3]])
    facts = [
        fact_data.Fact("q1", "red", "e1", "t"),
        fact_data.Fact("q2", "blue", "e2", "t"),
        fact_data.Fact("q3", "green", "e3", "t"),
    ]
    logprobs = torch.tensor(
        [
            [-1.0, -2.0, -3.0],  # red first before and after calibration
            [-1.0, -1.5, -3.0],  # red first raw; blue first once red's bias is removed
            [-1.0, -2.0, -2.5],  # green last raw; first after calibration? -2.5+3 > -1+1, -2+2
        ]
    )
    bias = torch.tensor([-1.0, -2.0, -3.0])
    scores = _scores(logprobs, facts, answers, bias)
    # calibrated rows: [0, 0, 0] (tie: red is not beaten), [0, 0.5, 0], [0, 0, 0.5]
    assert scores["correct"].tolist() == [1.0, 1.0, 1.0]
    raw = _scores(logprobs, facts, answers, torch.zeros(3))
    assert raw["correct"].tolist() == [1.0, 0.0, 0.0]
    assert scores["logprob"].tolist() == [-1.0, -1.5, -2.5]


@pytest.mark.slow
def test_qa_experiment_on_smollm(smollm, tmp_path):
    from headpursuit import capture

    sets = {c: known_facts(smollm, c, "test", max_asked=40) for c in fact_data.CONCEPTS}
    for fact_set in sets.values():
        assert fact_set.facts and fact_set.n_known == len(fact_set.facts) <= 40
        assert {fact_data.split_of(f.entity) for f in fact_set.facts} == {"test"}
    dev, _ = fact_data.questions(smollm.tokenizer, "countries", "dev")
    dev += fact_data.questions(smollm.tokenizer, "colours", "dev")[0]
    activations = capture(smollm, [f.prompt for f in dev[::10]], progress=False)
    out = tmp_path / "qa.json"
    result = run_qa(
        smollm,
        "countries",
        sets=sets,
        activations=activations,
        criterion="evr",  # the quickest; the criteria have their own oracle tests
        comparisons=(),
        ks=[3],
        alphas=(1.0, -1.0),
        n_controls=2,
        headline=False,
        output=out,
    )
    assert result.baseline.means["countries"]["correct"] == 1.0  # known by construction
    rows = result.summary()
    # α = 1 leaves the model unchanged: every arm reproduces the baseline exactly.
    for row in rows:
        if row["alpha"] == 1.0:
            assert row["value"] == 1.0
    flipped = [r for r in rows if r["alpha"] == -1.0 and r["arm"] == "selected"]
    assert {r["set"] for r in flipped} == set(fact_data.CONCEPTS)
    assert all(not math.isnan(r["p"]) and 1 / 3 <= r["p"] <= 1 for r in flipped)
    again = ExperimentResult.load(out)
    assert again.summary() == rows or np.allclose(
        [r["value"] for r in again.summary()], [r["value"] for r in rows]
    )
    assert result.config["n_known"]["countries"] == sets["countries"].n_known
