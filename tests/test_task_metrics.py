"""Metrics of the language tasks: answer normalisation, F1/EM, splits, word counts."""

from __future__ import annotations

import pytest

from headpursuit.evaluation.language.metrics import (
    count_words,
    exact_match,
    heldout_split,
    normalize_answer,
    token_f1,
    word_frequency,
)


def test_normalize_answer_strips_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The  United States, of America! ") == "united states of america"
    assert normalize_answer("An apple a day") == "apple day"
    # Articles only as whole words: "theatre" and "another" keep their letters.
    assert normalize_answer("Theatre another") == "theatre another"


def test_token_f1_partial_and_alias_max():
    # "capital of iran is tehran" vs "iran": precision 1/5, recall 1 -> F1 = 1/3.
    assert token_f1("The capital of Iran is Tehran.", ["Iran"]) == pytest.approx(1 / 3)
    assert token_f1("USA", ["United States", "USA"]) == 1.0
    assert token_f1("united states", ["United States of America"]) == pytest.approx(2 / 3)
    assert token_f1("Paris", ["London"]) == 0.0
    assert token_f1("", ["London"]) == 0.0


def test_exact_match_uses_normalisation_and_aliases():
    assert exact_match("the U.K.", ["United Kingdom", "UK"]) == 1.0
    assert exact_match("United Kingdom of GB", ["United Kingdom"]) == 0.0
    with pytest.raises(ValueError):
        exact_match("x", [])


def test_heldout_split_is_deterministic_disjoint_and_70_30():
    words = [f"w{i}" for i in range(20)]
    first = heldout_split(words, seed=3)
    assert first == heldout_split(list(reversed(words)), seed=3)
    train, test = first
    assert len(train) == 14 and len(test) == 6
    assert not set(train) & set(test) and set(train) | set(test) == set(words)
    assert heldout_split(words, seed=4) != first
    with pytest.raises(ValueError):
        heldout_split(["only"])


def test_count_words_respects_word_boundaries_and_case():
    text = "Red roses and a RED door; reddish bricks, bored kids, blue-green sea."
    assert count_words(text, ["red"]) == 2
    assert count_words(text, ["blue", "green"]) == 2
    assert count_words("light blue and blue", ["blue", "light blue"]) == 2
    assert word_frequency(["red red", "no colour", "Red."], ["red"]) == 1.0
    assert word_frequency([], ["red"]) == 0.0
