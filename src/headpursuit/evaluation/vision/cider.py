"""CIDEr-D through ``pycocoevalcap`` (the COCO caption toolkit's own scorer).

Captions are tokenised by :func:`tokenize` (lower case, punctuation removed, split on
spaces) instead of the Java PTB tokenizer that the COCO toolkit usually runs first; the
scores are otherwise the toolkit's (n = 1..4, σ = 6, clipped tf-idf, ×10).
"""

from __future__ import annotations

import re

from ...errors import InputError

_PUNCTUATION = re.compile(r"[^\w\s-]")


def tokenize(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def cider(references: list[list[str]], candidates: list[str]) -> tuple[float, list[float]]:
    """Corpus CIDEr-D and per-caption scores of ``candidates[i]`` against ``references[i]``.

    Raw texts; tokenised here with :func:`tokenize`. Needs ``pycocoevalcap`` (the ``vlm``
    extra: ``pip install 'headpursuit[vlm]'``).
    """
    if not candidates:
        raise InputError("No captions to score.")
    if len(references) != len(candidates):
        raise InputError(f"{len(references)} reference groups for {len(candidates)} captions.")
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError as error:
        raise InputError("CIDEr needs pycocoevalcap: pip install 'headpursuit[vlm]'.") from error
    gts = {i: [tokenize(r) for r in group] for i, group in enumerate(references)}
    res = {i: [tokenize(c)] for i, c in enumerate(candidates)}
    mean, per = Cider().compute_score(gts, res)
    return float(mean), [float(x) for x in per]
