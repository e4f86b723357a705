"""Concept word lists -> token ids."""

from __future__ import annotations

import pytest

from conftest import tiny_tokenizer
from headpursuit import BUILTIN_CONCEPTS, ConceptError, concept_from_words, resolve_concept
from headpursuit.ranking.concepts import builtin_words, word_variants


def test_variants_cover_case_and_leading_space():
    assert set(word_variants("red")) == {"red", " red", "Red", " Red"}


def test_words_missing_from_vocabulary_are_reported():
    concept = concept_from_words(tiny_tokenizer(), ["red", "blue", "ultramarine"], name="c")
    tokenizer = tiny_tokenizer()
    assert concept.token_ids == sorted(
        {tokenizer.convert_tokens_to_ids("red"), tokenizer.convert_tokens_to_ids("blue")}
    )
    assert concept.dropped == {"ultramarine": "no single-token spelling"}


def test_no_usable_word_is_an_error():
    with pytest.raises(ConceptError, match="None of the 2 words"):
        concept_from_words(tiny_tokenizer(), ["ultramarine", "vermilion"])


def test_unknown_concept_and_missing_file(tmp_path):
    with pytest.raises(ConceptError, match=r"Unknown concept 'colours'.*colors"):
        resolve_concept(tiny_tokenizer(), "colours")
    with pytest.raises(ConceptError, match="No word-list file"):
        resolve_concept(tiny_tokenizer(), str(tmp_path / "words.txt"))
    path = tmp_path / "words.txt"
    path.write_text("# my words\nred\n\nParis\n")
    assert resolve_concept(tiny_tokenizer(), str(path)).words == ["red", "Paris"]


@pytest.mark.parametrize("name", BUILTIN_CONCEPTS)
def test_builtin_lists_load(name):
    words = builtin_words(name)
    assert len(words) >= 19 and all(not w.startswith("#") for w in words)
