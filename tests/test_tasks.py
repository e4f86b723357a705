"""The language tasks' shared pieces: bundled data and readers, head counts, generation and
perplexity on the real embedded SmolLM2 (the experiments: test_qa.py, test_wordfreq.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from headpursuit import steer
from headpursuit.errors import InputError
from headpursuit.evaluation.experiment import heads_for_percent
from headpursuit.evaluation.language import data
from headpursuit.steering.generation import generate


def test_heads_for_percent():
    assert [heads_for_percent(p, 270) for p in (1, 2, 3)] == [3, 5, 8]
    assert heads_for_percent(0.01, 270) == 1
    with pytest.raises(InputError, match="percentage"):
        heads_for_percent(0, 270)


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
def test_generate_left_pads_and_alpha_one_is_identity(smollm):
    prompts = ["What is 2 plus 2?", "Name a colour of the sky on a clear day, please."]
    _, alone = generate(smollm, prompts[:1], max_new_tokens=6)
    _, batched = generate(smollm, prompts, max_new_tokens=6)
    assert batched[0] == alone[0]
    with steer(smollm.model, [(20, 1), (25, 3)], 1.0):
        _, same = generate(smollm, prompts, max_new_tokens=6)
    assert same == batched


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
