"""Concepts: word lists turned into dictionary rows (token ids) with the tokenizer's conventions.

A word can be written several ways by a BPE tokenizer: at the start of a text (``red``)
or after a space (`` red``), in lower case or capitalised (``Red``, `` Red``). Each variant
that is a *single* token gives one dictionary row; the concept is the union.

Multi-token variants are skipped by default (``multi_token="skip"``): their first piece is
often a fragment shared with unrelated words (`` Bel`` for "Belgium" and "Belarus"). With
``multi_token="first"`` the first piece of each multi-token variant is kept instead. A word
with no usable variant is dropped, and reported with the reason.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConceptError

#: Built-in concept name -> bundled word-list file (sources in each file's header).
BUILTIN_CONCEPTS: dict[str, str] = {
    "colors": "colors.txt",
    "countries": "countries.txt",
    "nationalities": "nationalities.txt",
    "months_weekdays": "months_weekdays.txt",
    "numbers": "numbers.txt",
}


@dataclass
class Concept:
    """A concept resolved against one tokenizer.

    Attributes:
        name: the concept's name.
        token_ids: sorted unique dictionary rows (token ids) for the concept.
        words: the words that contributed at least one token.
        dropped: word -> reason it contributed none.
        tokens_by_word: word -> its token ids.
    """

    name: str
    token_ids: list[int]
    words: list[str]
    dropped: dict[str, str] = field(default_factory=dict)
    tokens_by_word: dict[str, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.token_ids)

    def __repr__(self) -> str:
        return (
            f"Concept({self.name!r}: {len(self.token_ids)} tokens from {len(self.words)} words, "
            f"{len(self.dropped)} dropped)"
        )


def read_word_list(path: str | os.PathLike[str]) -> list[str]:
    """Words from a text file: one per line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise ConceptError(f"No word-list file at {path}.")
    words = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [word for word in words if word and not word.startswith("#")]


def builtin_words(name: str) -> list[str]:
    """Words of a built-in concept (see :data:`BUILTIN_CONCEPTS`)."""
    if name not in BUILTIN_CONCEPTS:
        raise ConceptError(
            f"Unknown concept {name!r}. Built-in concepts: {', '.join(BUILTIN_CONCEPTS)}; "
            "or give a word-list file (one word per line)."
        )
    text = resources.files("headpursuit").joinpath("data", "concepts", BUILTIN_CONCEPTS[name])
    return [
        w
        for w in (line.strip() for line in text.read_text("utf-8").splitlines())
        if w and not w.startswith("#")
    ]


def word_variants(word: str) -> list[str]:
    """The spellings looked up for a word: as given, lower, capitalised; bare and after a space."""
    cases = dict.fromkeys([word, word.lower(), word[:1].upper() + word[1:]])
    return [prefix + case for case in cases for prefix in ("", " ")]


def concept_from_words(
    tokenizer: Any, words: list[str], *, name: str = "custom", multi_token: str = "skip"
) -> Concept:
    """Resolve words to token ids (see module doc for the conventions).

    Raises:
        ConceptError: if no word has a usable token, naming the words and why.
    """
    if multi_token not in ("skip", "first"):
        raise ConceptError(f"multi_token must be 'skip' or 'first', got {multi_token!r}.")
    token_ids: set[int] = set()
    kept: list[str] = []
    dropped: dict[str, str] = {}
    by_word: dict[str, list[int]] = {}
    unknown = getattr(tokenizer, "unk_token_id", None)
    for word in dict.fromkeys(words):
        ids: set[int] = set()
        for variant in word_variants(word):
            pieces = tokenizer.encode(variant, add_special_tokens=False)
            if unknown is not None and unknown in pieces:
                continue
            if len(pieces) == 1 or (multi_token == "first" and pieces):
                ids.add(pieces[0])
        if ids:
            kept.append(word)
            by_word[word] = sorted(ids)
            token_ids |= ids
        else:
            dropped[word] = "no single-token spelling" if multi_token == "skip" else "empty"
    if not token_ids:
        raise ConceptError(
            f"None of the {len(dropped)} words of concept {name!r} is a single token in this "
            "vocabulary (e.g. " + ", ".join(list(dropped)[:5]) + "). Use multi_token='first' "
            "or give other words."
        )
    return Concept(name, sorted(token_ids), kept, dropped, by_word)


def resolve_concept(tokenizer: Any, concept: str, *, multi_token: str = "skip") -> Concept:
    """A built-in concept by name, or a word-list file by path."""
    if concept in BUILTIN_CONCEPTS:
        return concept_from_words(
            tokenizer, builtin_words(concept), name=concept, multi_token=multi_token
        )
    path = Path(concept)
    if path.suffix or path.exists():
        return concept_from_words(
            tokenizer, read_word_list(path), name=path.stem, multi_token=multi_token
        )
    builtin_words(concept)  # raises the unknown-concept error
    raise AssertionError("builtin_words raises for a name that is not built in")


_WORD_TOKEN = re.compile(r"^ ?[A-Za-z]{3,}$")


def word_token_ids(tokenizer: Any) -> list[int]:
    """Ids of word-like tokens: 3+ ASCII letters, optionally after one leading space.

    The pool that :func:`~headpursuit.ranking.criteria.rank_heads` draws random
    dictionaries from for the ``specificity`` criterion.
    """
    vocab = tokenizer.get_vocab()
    ids = sorted(vocab.values())
    pieces = tokenizer.convert_ids_to_tokens(ids)
    return [
        token_id
        for token_id, piece in zip(ids, pieces, strict=True)
        if piece and _WORD_TOKEN.match(tokenizer.convert_tokens_to_string([piece]))
    ]
