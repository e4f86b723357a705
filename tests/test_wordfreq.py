"""Word frequency and amplification on the experiment engine: prompt splits, per-prompt
counts against a hand count, α = 1 as the identity, the increase direction, round trips."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from conftest import WORDS, random_prompts, tiny_model
from headpursuit import steer
from headpursuit.errors import InputError
from headpursuit.evaluation.experiment import ExperimentResult
from headpursuit.evaluation.language.amplify import run_amplify
from headpursuit.evaluation.language.metrics import continuation_perplexities
from headpursuit.evaluation.language.wordfreq import (
    DEV_FRACTION,
    MIN_HELDOUT_WORDS,
    run_wordfreq,
    split_prompts,
    word_task,
)
from headpursuit.steering.generation import generate

# A concept of 60 words of the tiny vocabulary, so that a random model emits some of them.
CONCEPT_WORDS = [*WORDS[:57], "red", "blue", "green"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama_gqa")


@pytest.fixture()
def concept_file(tmp_path):
    path = tmp_path / "tinywords.txt"
    path.write_text("\n".join(CONCEPT_WORDS) + "\n")
    return path


def _hand_count(text: str, words: list[str]) -> int:
    """Whole-word occurrences, by splitting on spaces (the tiny vocabulary has no punctuation)."""
    chosen = {w.lower() for w in words}
    return sum(token.lower() in chosen for token in text.split())


def test_prompt_split_is_disjoint_deterministic_and_order_free():
    prompts = [f"Describe thing number {i}." for i in range(50)]
    selection, dev, test = split_prompts(prompts, seed=3)
    assert len(selection) == 25 and len(dev) == round(DEV_FRACTION * 25) and len(test) == 15
    assert sorted(selection + dev + test) == sorted(prompts)
    again = split_prompts(list(reversed(prompts)) + prompts[:5], seed=3)  # order, duplicates
    assert [sorted(part) for part in again] == [sorted(selection), sorted(dev), sorted(test)]
    assert split_prompts(prompts, seed=4) != (selection, dev, test)
    assert all(part for part in split_prompts(prompts[:4]))
    with pytest.raises(InputError, match="at least 4 distinct prompts"):
        split_prompts(["a", "b", "a", "c"])


def test_word_task_splits_words_and_checks_inputs(concept_file, tmp_path):
    task = word_task(concept_file, random_prompts(20))
    assert task.concept == "tinywords"
    assert sorted(task.selection_words + task.heldout_words) == sorted(CONCEPT_WORDS)
    assert not set(task.selection_words) & set(task.heldout_words)
    assert task.prompts("dev") == task.dev_prompts and task.prompts("test") == task.test_prompts
    with pytest.raises(InputError, match="split"):
        task.prompts("train")
    with pytest.raises(InputError, match="Unknown concept 'planets'"):
        word_task("planets")
    with pytest.raises(InputError, match="No prompt file"):
        word_task("colors", tmp_path / "missing.txt")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_wordfreq_counts_identity_and_round_trip(tiny, concept_file, tmp_path):
    task = word_task(concept_file, random_prompts(24, seed=1), seed=0)
    out = tmp_path / "wf.json"
    said: list[str] = []
    result = run_wordfreq(
        tiny, task, criterion="evr", comparisons=("logit_lens",), ks=[2], alphas=[1.0, 0.0],
        n_controls=3, max_new_tokens=6, fluency=True, output=out, log=said.append,
    )  # fmt: skip
    prompts = task.test_prompts
    assert result.sets[0].clusters == tuple(prompts) and result.sets[0].role == "target"
    assert result.direction == "decrease" and result.primary == "heldout_freq"
    # Per-prompt counts against a hand count on the unmodified model's generations.
    texts = result.config["baseline_continuations"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert generate(tiny, prompts, max_new_tokens=6)[1] == texts
    base = result.baseline.items[task.concept]
    assert base["heldout_freq"] == [_hand_count(t, task.heldout_words) for t in texts]
    assert base["all_freq"] == [_hand_count(t, CONCEPT_WORDS) for t in texts]
    assert base["selection_freq"] == [_hand_count(t, task.selection_words) for t in texts]
    assert sum(base["all_freq"]) > 0  # the hand count is not a count of nothing
    emitted = sum(_hand_count(t, task.heldout_words) for t in texts)
    assert result.config["baseline_heldout_words"] == emitted < MIN_HELDOUT_WORDS
    assert f"Unmodified model: {emitted} held-out tinywords words in {len(prompts)} test" in (
        " ".join(said)
    )
    assert any(line.startswith("Warning: fewer than 50 held-out words") for line in said)
    # ... and on a steered arm's generations.
    ablated = next(a for a in result.arms if a.arm == "selected" and a.alpha == 0.0)
    with warnings.catch_warnings(), steer(tiny.model, ablated.heads, 0.0):
        warnings.simplefilter("ignore")
        steered = generate(tiny, prompts, max_new_tokens=6)[1]
    items = ablated.items[task.concept]["heldout_freq"]
    assert items == [_hand_count(t, task.heldout_words) for t in steered]
    # α = 1 leaves the model unchanged: every arm reproduces the baseline item by item.
    identity = [a for a in result.arms[1:] if a.alpha == 1.0]
    assert {a.arm for a in identity} == {"selected", "logit_lens", "control"}
    for arm in identity:
        assert arm.means == result.baseline.means
        if arm.arm != "control":
            assert arm.items == result.baseline.items
    for row in result.summary():
        if row["alpha"] == 1.0:
            assert row["value"] == 1.0
    # No non-target set: significance only.
    for verdict in result.verdicts():
        assert verdict["specific"] is None and math.isnan(verdict["nontarget_p"])
    back = ExperimentResult.load(out)
    assert back.summary() == result.summary()
    assert back.config["heldout_words"] == task.heldout_words
    assert back.summary("perplexity") == result.summary("perplexity")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_amplify_direction_and_p_value_count_larger_controls(tiny, concept_file):
    task = word_task(concept_file, random_prompts(24, seed=2), seed=1)
    result = run_amplify(
        tiny, task, criterion="evr", comparisons=(), ks=[3], alphas=[5.0], n_controls=6,
        max_new_tokens=6, split="dev",
    )  # fmt: skip
    assert result.task == "amplify" and result.direction == "increase"
    assert result.sets[0].clusters == tuple(task.dev_prompts)
    assert result.config["split"] == "dev"
    selected = next(a for a in result.arms if a.arm == "selected")
    value = result.normalised(selected, task.concept)
    controls = [result.normalised(a, task.concept) for a in result.arms if a.arm == "control"]
    assert len(controls) == 6
    row = next(r for r in result.summary() if r["arm"] == "selected")
    assert row["p"] == pytest.approx((1 + sum(c >= value for c in controls)) / 7)
    assert "perplexity" in selected.items[task.concept]
    assert all(p > 1 for p in result.baseline.items[task.concept]["perplexity"])


def test_per_continuation_perplexity_matches_unpadded_forwards(tiny):
    prompts = ["w1 w2 w3 w4 w5", "red", "w9 blue", "w7"]
    continuations = ["w8 w9", "green w3 w3 w4", "", "Paris"]
    got = continuation_perplexities(tiny, prompts, continuations, batch_size=3)
    for i, (prompt, continuation) in enumerate(zip(prompts, continuations, strict=True)):
        p = tiny.tokenizer.encode(prompt, add_special_tokens=False)
        # An empty continuation is scored as the end-of-sequence token alone.
        c = tiny.tokenizer.encode(continuation, add_special_tokens=False) or [1]
        with torch.no_grad():
            logits = tiny.model(torch.tensor([p + c])).logits[0].double()
        logprobs = torch.log_softmax(logits, -1)
        nll = -sum(float(logprobs[len(p) + j - 1, token]) for j, token in enumerate(c))
        assert got[i] == pytest.approx(np.exp(nll / len(c)), rel=1e-4)


@pytest.mark.slow
def test_smollm_emits_50_heldout_colour_words_on_the_test_split(smollm):
    """The issue's floor: the unmodified model's continuations of the bundled colour
    prompts' test split hold at least 50 held-out colour words (default token budget)."""
    from headpursuit.evaluation.language.wordfreq import MAX_NEW_TOKENS

    task = word_task("colors")
    _, continuations = generate(smollm, task.test_prompts, max_new_tokens=MAX_NEW_TOKENS)
    assert task.counts(continuations)["heldout_freq"].sum() >= 50


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cli_amplify_and_wordfreq_write_experiments(tiny, concept_file, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from headpursuit.cli import app
    from headpursuit.models import loading

    monkeypatch.setattr(loading, "load_model", lambda *args, **kwargs: tiny)
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(random_prompts(16, seed=4)) + "\n")
    common = ["--prompts", prompts, "--criterion", "evr", "--compare", "logit_lens", "--ks",
              "2", "--controls", "2", "--max-new-tokens", "4"]  # fmt: skip
    for command, alphas in (("wordfreq", "0"), ("amplify", "5")):
        out = tmp_path / f"{command}.json"
        args = [command, concept_file, *common, "--alphas", alphas, "--split", "dev", "-o", out]
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        saved = ExperimentResult.load(out)
        assert saved.task == command and saved.config["split"] == "dev"
        assert {a.arm for a in saved.arms} == {"baseline", "selected", "logit_lens", "control"}
        assert "heldout_freq / unmodified model" in result.stdout
        assert ("perplexity / unmodified model" in result.stdout) == (command == "amplify")
        assert "significant" in result.stdout and f"Wrote {out}" in result.stdout
