"""Captioning under head interventions (paper §4.2 / Flickr30k colour experiment).

Heads are selected by SOMP over a concept's word tokens (default: the colour words of the
shape scenes) with image-token pooling on selection images. On disjoint evaluation images
the model captions each image unmodified, with the top-k heads suppressed (α = −1) or
amplified (α = 5), and with matched random heads (several seeds). Metrics: the frequency of
the concept's words (share of captions naming at least one, and words per caption) and
CIDEr against the reference captions; retention = value / unmodified value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...errors import InputError
from ...io import write_json
from ...models.architectures import AttentionSites
from ...models.loading import LoadedModel
from ...ranking.concepts import concept_from_words
from ...ranking.controls import matched_controls
from ...ranking.head_ranking import HeadRanking
from ...steering.generation import generate
from ...steering.hooks import steer
from .cider import cider, tokenize
from .classify import mean_std, prompt_for, rank_image_heads
from .data import SHAPE_COLOURS, ImageExample

COLOUR_WORDS = list(SHAPE_COLOURS)


def keyword_stats(captions: Sequence[str], words: Sequence[str]) -> tuple[float, float]:
    """(share of captions with at least one of ``words``, mean count of ``words`` per caption)."""
    vocabulary = {w.lower() for w in words}
    counts = [sum(t in vocabulary for t in tokenize(c).split()) for c in captions]
    return sum(c > 0 for c in counts) / len(counts), sum(counts) / len(counts)


def select_concept_heads(
    loaded: LoadedModel,
    examples: Sequence[ImageExample],
    words: Sequence[str],
    *,
    concept: str = "colours",
    criterion: str = "specificity",
    n_atoms: int = 10,
) -> HeadRanking:
    """Rank heads by SOMP over the concept words' tokens with image-token pooling
    (see :func:`~headpursuit.vlm.classify.rank_image_heads` for ``criterion``)."""
    tokens = concept_from_words(loaded.tokenizer, list(words), name=concept, multi_token="first")
    return rank_image_heads(
        loaded, examples, tokens.token_ids, concept=concept, criterion=criterion, n_atoms=n_atoms
    )


@dataclass
class CaptionRow:
    """One condition: heads chosen by ``condition`` ("unmodified", "somp", "random") scaled by α.

    ``*_retention`` are the value divided by the unmodified model's value.
    """

    condition: str
    k: int
    seed: int
    alpha: float
    keyword_share: float
    keywords_per_caption: float
    cider: float
    keyword_retention: float = float("nan")
    cider_retention: float = float("nan")
    example: str = ""


@dataclass
class CaptionResult:
    """Captioning under interventions: rows, the heads, and the captions of each condition."""

    concept: str
    words: list[str]
    n_select: int
    n_eval: int
    rows: list[CaptionRow]
    heads: dict[int, list[str]] = field(default_factory=dict)
    model_id: str = ""

    def to_frame(self):
        """One row per condition (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.rows])

    def summary(self):
        """Mean ± std over seeds of keyword and CIDEr retention per (condition, k, α)."""
        import pandas as pd

        groups: dict[tuple[str, int, float], list[CaptionRow]] = {}
        for row in self.rows:
            groups.setdefault((row.condition, row.k, row.alpha), []).append(row)
        records = []
        for (condition, k, alpha), rows in groups.items():
            record = {"condition": condition, "k": k, "alpha": alpha, "n": len(rows)}
            for name in ("keywords_per_caption", "keyword_retention", "cider", "cider_retention"):
                values = [getattr(r, name) for r in rows]
                record[name], record[name + "_std"] = mean_std(values)
            records.append(record)
        return pd.DataFrame(records)

    def to_json(self) -> dict:
        return {
            "kind": "headpursuit.vlm.caption",
            "concept": self.concept,
            "words": self.words,
            "model_id": self.model_id,
            "n_select": self.n_select,
            "n_eval": self.n_eval,
            "heads": {str(k): v for k, v in self.heads.items()},
            "rows": [asdict(r) for r in self.rows],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_json(path, self.to_json())


def caption(
    loaded: LoadedModel,
    select: Sequence[ImageExample],
    evaluate: Sequence[ImageExample],
    *,
    words: Sequence[str] = COLOUR_WORDS,
    concept: str = "colours",
    ks: Sequence[int] = (8,),
    alphas: Sequence[float] = (-1.0, 5.0),
    seeds: int = 5,
    positions: str = "all",
    max_new_tokens: int = 16,
    ranking: HeadRanking | None = None,
    out: str | os.PathLike[str] | None = None,
) -> CaptionResult:
    """Caption ``evaluate`` unmodified and with top-k concept heads / matched controls scaled.

    Args:
        select: images for head selection (disjoint from ``evaluate``).
        evaluate: images with ``references`` (or ``answer``) as reference captions.
        words: the concept's words, counted in the captions and used as the SOMP dictionary.
        ks, alphas, seeds: heads per condition, scales (−1 suppresses, 5 amplifies), controls.
    """
    if {id(e.image) for e in select} & {id(e.image) for e in evaluate}:
        raise InputError("Selection and evaluation images overlap; use disjoint sets.")
    if ranking is None:
        ranking = select_concept_heads(loaded, select, words, concept=concept)
    sites = AttentionSites(loaded.model)
    prompts = [prompt_for(loaded, e.question) for e in evaluate]
    images = [e.image for e in evaluate]
    references = [e.references or [e.answer] for e in evaluate]

    def run(condition: str, k: int, seed: int, alpha: float, heads) -> CaptionRow:
        with steer(loaded.model, heads, alpha, positions=positions):
            _, captions = generate(
                loaded, prompts, images=images, chat=False, max_new_tokens=max_new_tokens
            )
        captions = [re.split(r"\n", c.strip())[0] for c in captions]
        share, per_caption = keyword_stats(captions, words)
        score, _ = cider(references, captions)
        return CaptionRow(condition, k, seed, alpha, share, per_caption, score, example=captions[0])

    rows = [run("unmodified", 0, -1, 1.0, [])]
    heads: dict[int, list[str]] = {}
    for k in ks:
        top = ranking.top(k)
        heads[k] = [str(h) for h in top]
        for alpha in alphas:
            rows.append(run("somp", k, -1, alpha, top))
            for seed in range(seeds):
                controls = matched_controls(top, sites.n_layers, sites.n_heads, seed=seed)
                rows.append(run("random", k, seed, alpha, controls))
    base = rows[0]
    for row in rows:
        row.keyword_retention = (
            row.keywords_per_caption / base.keywords_per_caption
            if base.keywords_per_caption
            else float("nan")
        )
        row.cider_retention = row.cider / base.cider if base.cider else float("nan")
    result = CaptionResult(
        concept, list(words), len(select), len(evaluate), rows, heads, loaded.model_id
    )
    if out is not None:
        result.save(out)
    return result
