"""CIDEr (the ``pycocoevalcap`` variant: n = 1..4, σ = 6, clipped tf-idf, ×10).

:func:`cider` uses ``pycocoevalcap``'s pure-Python ``Cider`` scorer when it is installed and
this port otherwise; both give identical numbers (tested). Captions are tokenised by
:func:`tokenize` (lowercase, punctuation removed, split on spaces) instead of the Java PTB
tokenizer that the COCO toolkit usually runs first. The port mirrors the reference code,
including its quirk that the length penalty counts bigrams (``n == 1`` there is 0-based).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

_PUNCTUATION = re.compile(r"[^\w\s-]")


def tokenize(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def _ngrams(sentence: str, n: int = 4) -> Counter:
    words = sentence.split()
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def cider_port(
    references: list[list[str]], candidates: list[str], n: int = 4, sigma: float = 6.0
) -> tuple[float, list[float]]:
    """CIDEr of ``candidates[i]`` against ``references[i]`` (already tokenised strings).

    Returns:
        (corpus mean, per-candidate scores).
    """
    crefs = [[_ngrams(r, n) for r in refs] for refs in references]
    ctest = [_ngrams(c, n) for c in candidates]
    document_frequency: defaultdict = defaultdict(float)
    for refs in crefs:
        for ngram in {g for ref in refs for g in ref}:
            document_frequency[ngram] += 1
    ref_len = math.log(float(len(crefs)))

    def vec(counts: Counter) -> tuple[list[dict], list[float], int]:
        vectors: list[dict] = [defaultdict(float) for _ in range(n)]
        norms = [0.0] * n
        length = 0
        for ngram, tf in counts.items():
            df = math.log(max(1.0, document_frequency[ngram]))
            k = len(ngram) - 1
            vectors[k][ngram] = float(tf) * (ref_len - df)
            norms[k] += vectors[k][ngram] ** 2
            if k == 1:
                length += tf
        return vectors, [math.sqrt(x) for x in norms], length

    def sim(hyp, ref) -> list[float]:
        (vh, nh, lh), (vr, nr, lr) = hyp, ref
        delta = float(lh - lr)
        values = [0.0] * n
        for k in range(n):
            for ngram in vh[k]:
                values[k] += min(vh[k][ngram], vr[k][ngram]) * vr[k][ngram]
            if nh[k] != 0 and nr[k] != 0:
                values[k] /= nh[k] * nr[k]
            values[k] *= math.e ** (-(delta**2) / (2 * sigma**2))
        return values

    scores = []
    for test, refs in zip(ctest, crefs, strict=True):
        hyp = vec(test)
        total = [0.0] * n
        for ref in refs:
            total = [a + b for a, b in zip(total, sim(hyp, vec(ref)), strict=True)]
        scores.append(sum(total) / n / len(refs) * 10.0)
    return sum(scores) / len(scores), scores


def cider(references: list[list[str]], candidates: list[str]) -> tuple[float, list[float]]:
    """Corpus CIDEr and per-caption scores; raw texts, tokenised here with :func:`tokenize`."""
    refs = [[tokenize(r) for r in group] for group in references]
    cands = [tokenize(c) for c in candidates]
    if not cands:
        raise ValueError("No captions to score.")
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        return cider_port(refs, cands)
    gts = {i: group for i, group in enumerate(refs)}
    res = {i: [c] for i, c in enumerate(cands)}
    mean, per = Cider().compute_score(gts, res)
    return float(mean), [float(x) for x in per]
