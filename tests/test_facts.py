"""The fact questions (dev/test by entity) and teacher-forced answer scoring."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from headpursuit.evaluation.language import facts
from headpursuit.steering.generation import next_token_logprobs


@pytest.mark.parametrize("concept", facts.CONCEPTS)
def test_splits_are_disjoint_by_entity_and_deterministic(concept):
    questions = facts.all_facts(concept)
    assert questions == facts.all_facts(concept)
    dev = {f.entity for f in questions if facts.split_of(f.entity) == "dev"}
    test = {f.entity for f in questions if facts.split_of(f.entity) == "test"}
    assert dev and test and not dev & test
    assert len(dev) + len(test) == len(facts.entities(questions))
    answers = set(facts.concept_answers(concept))
    assert all(f.answer in answers for f in questions)
    assert all(
        f.prompt.startswith("Question: ") and f.prompt.endswith("\nAnswer:") for f in questions
    )
    # Another seed gives another split.
    assert {f.entity for f in questions if facts.split_of(f.entity, seed=1) == "dev"} != dev


def test_questions_do_not_give_their_answer_away():
    for fact in facts.all_facts("countries"):
        assert fact.answer.lower() not in fact.question.lower()
    numbers = facts.all_facts("numbers")
    plus = next(f for f in numbers if f.question == "What is seven plus five?")
    assert plus.answer == "twelve"
    assert next(f for f in numbers if f.question == "What is nine minus nine?").answer == "zero"


@pytest.mark.slow
def test_answer_sets_keep_single_token_spellings_only(smollm):
    smollm_tokenizer = smollm.tokenizer
    answers = facts.answer_set(smollm_tokenizer, "colours")
    grey = answers.token_ids[answers.index("grey")]
    spelled = {smollm_tokenizer.decode([t]) for t in grey}
    assert {" grey", " gray"} <= spelled
    for word, ids in zip(answers.answers, answers.token_ids, strict=True):
        for spelling in facts.spellings(word, "colours"):
            assert smollm_tokenizer.encode(spelling, add_special_tokens=False)[0] in ids


def test_next_token_logprobs_match_a_plain_forward_pass():
    loaded = tiny_model("llama_gqa")
    prompts = ["w1 w2 w3 w4 w5", "red", "blue green w7"]  # different lengths: left padding
    groups = [[5], [6, 9], [40]]
    got = next_token_logprobs(loaded, prompts, groups, batch_size=2)
    for row, prompt in enumerate(prompts):
        ids = loaded.tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(loaded.model(input_ids=ids).logits[0, -1].double(), -1)
        expected = [float(torch.logsumexp(logprobs[g], 0)) for g in groups]
        assert got[row].tolist() == pytest.approx(expected, abs=1e-4)
