"""Captioning under head interventions (paper §4.2, Flickr30k colours), on the experiment engine.

Heads are ranked by :func:`~headpursuit.ranking.criteria.rank_heads` over a concept's word
tokens (default: the colour words of the shape scenes) with image-token pooling on
selection images. On disjoint evaluation images the model captions each image unmodified,
with the top-k heads scaled, with at least 20 matched random control head sets and with
the comparison rankings' top-k (:func:`~headpursuit.evaluation.experiment.run_experiment`).
Per image (each image its own bootstrap cluster):

* ``concept_words``: how many of the concept's words the caption holds (the primary);
* ``any_concept_word``: 1 if it holds at least one;
* ``cider``: the caption's CIDEr-D against the image's reference captions (pycocoevalcap's
  per-image score; the corpus CIDEr is their mean, so ``Σ arm / Σ baseline`` is the CIDEr
  retention);
* ``cider_non_concept``: the same with the concept's words deleted from the caption and
  from every reference (:func:`without_words`): how well the rest of the caption (objects,
  sizes, order) survives. Suppressing colour words costs full-caption CIDEr by construction
  on captions as short as "a small red circle"; this retention reads only what the
  intervention should leave alone.

One experiment has one direction, derived from its scales (:func:`direction_for`):
suppression (α < 1, e.g. −1) expects fewer concept words ("decrease"), amplification
(α > 1, e.g. 5) more ("increase"); run the two as two experiments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...models.architectures import AttentionSites
from ...models.loading import LoadedModel
from ...ranking.criteria import DEFAULT_CRITERION
from ...ranking.head_ranking import HeadRanking
from ...steering.generation import generate
from ..experiment import ExperimentResult, ItemSet, choose_ks, run_experiment
from .cider import cider, tokenize
from .classify import (
    COMPARISONS,
    check_disjoint,
    prompt_for,
    rank_all,
    record_texts,
    select_heads,
)
from .data import SHAPE_COLOURS, ImageExample

COLOUR_WORDS = list(SHAPE_COLOURS)


def word_counts(captions: Sequence[str], words: Sequence[str]) -> np.ndarray:
    """``[n]`` how many tokens of each caption (after :func:`~.cider.tokenize`) are one of
    ``words`` (case-insensitive)."""
    vocabulary = {w.lower() for w in words}
    return np.array([float(sum(t in vocabulary for t in tokenize(c).split())) for c in captions])


def without_words(text: str, words: Sequence[str]) -> str:
    """``text`` after :func:`~.cider.tokenize`, without the tokens that are one of ``words``
    (case-insensitive): "A small RED circle." -> "a small circle" for words = ["red"]."""
    vocabulary = {w.lower() for w in words}
    return " ".join(t for t in tokenize(text).split() if t not in vocabulary)


def keyword_stats(captions: Sequence[str], words: Sequence[str]) -> tuple[float, float]:
    """(share of captions with at least one of ``words``, mean count of ``words`` per caption)."""
    counts = word_counts(captions, words)
    return float((counts > 0).mean()), float(counts.mean())


def direction_for(alphas: Sequence[float]) -> str:
    """ "decrease" when every scale is at most 1 (suppression), "increase" when every scale
    is at least 1 (amplification); a mix is refused (one experiment, one direction)."""
    if all(a <= 1 for a in alphas):
        return "decrease"
    if all(a >= 1 for a in alphas):
        return "increase"
    raise InputError(
        f"Scales {', '.join(f'{a:g}' for a in alphas)} mix suppression (below 1) and "
        "amplification (above 1); run them as two experiments, e.g. --alphas=-1 and --alphas 5."
    )


def select_concept_heads(
    loaded: LoadedModel,
    examples: Sequence[ImageExample],
    words: Sequence[str],
    *,
    concept: str = "colours",
    criterion: str = DEFAULT_CRITERION,
) -> HeadRanking:
    """Rank heads for the concept words' tokens with image-token pooling
    (:func:`~headpursuit.evaluation.vision.classify.select_heads`)."""
    return select_heads(loaded, examples, words, concept=concept, criterion=criterion)


def caption_images(
    loaded: LoadedModel,
    examples: Sequence[ImageExample],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 32,
) -> list[str]:
    """The first line of the greedy caption of each image (as the model is now)."""
    _, captions = generate(
        loaded,
        [prompt_for(loaded, e.question) for e in examples],
        images=[e.image for e in examples],
        chat=False,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    return [c.strip().split("\n")[0] for c in captions]


def caption_scores(
    captions: Sequence[str], examples: Sequence[ImageExample], words: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-caption ``concept_words``, ``any_concept_word``, ``cider`` and
    ``cider_non_concept`` (module doc); the references are each example's ``references``
    (or its ``answer``)."""
    counts = word_counts(captions, words)
    references = [e.references or [e.answer] for e in examples]
    _, per_image = cider(references, list(captions))
    stripped = [[without_words(r, words) for r in group] for group in references]
    if any(r for group in stripped for r in group):
        _, rest = cider(stripped, [without_words(c, words) for c in captions])
    else:  # the references hold nothing but concept words: nothing else to retain
        rest = [0.0] * len(captions)
    return {
        "concept_words": counts,
        "any_concept_word": (counts > 0).astype(float),
        "cider": np.array(per_image),
        "cider_non_concept": np.array(rest),
    }


def run_caption(
    loaded: LoadedModel,
    select: Sequence[ImageExample],
    evaluate: Sequence[ImageExample],
    *,
    words: Sequence[str] = COLOUR_WORDS,
    concept: str = "colours",
    dataset: str = "shapes",
    rankings: Mapping[str, HeadRanking] | None = None,
    criterion: str = DEFAULT_CRITERION,
    comparisons: Sequence[str] = COMPARISONS,
    percents: Sequence[float] = (1.0, 2.0, 3.0),
    ks: Sequence[int] | None = None,
    alphas: Sequence[float] = (-1.0,),
    direction: str | None = None,
    n_controls: int = 20,
    seed: int = 0,
    positions: str = "all",
    layers: tuple[int, int] | None = None,
    max_new_tokens: int = 16,
    batch_size: int = 32,
    output: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> ExperimentResult:
    """Caption ``evaluate`` unmodified and with the concept's top-k heads, the comparison
    rankings' and matched controls scaled by each α.

    Args:
        select: images for head selection (disjoint from ``evaluate``).
        evaluate: images with ``references`` (or ``answer``) as reference captions.
        words: the concept's words: the ranking's dictionary, and counted in the captions.
        dataset: the name of the evaluated set.
        rankings, criterion, comparisons, percents, ks, n_controls, positions, layers: as
            :func:`~headpursuit.evaluation.vision.classify.run_classify`.
        alphas: scales (−1 suppresses, 5 amplifies; not both in one experiment).
        direction: "decrease" or "increase" (default: :func:`direction_for` the alphas).

    Returns:
        an :class:`~headpursuit.evaluation.experiment.ExperimentResult` (task "caption",
        primary ``concept_words``); ``config["texts"]`` holds the captions of the baseline
        and of every ranking's arm.
    """
    if not evaluate:
        raise InputError("No evaluation images to caption.")
    check_disjoint(select, evaluate)
    direction = direction or direction_for(alphas)
    known = rank_all(
        loaded,
        select,
        words,
        [criterion, *comparisons],
        concept=concept,
        rankings=rankings,
        seed=seed,
        layers=layers,
        batch_size=batch_size,
        log=log,
    )
    ranking = known[criterion]
    others = [known[c] for c in comparisons if c != criterion]
    texts: list[dict[str, list[str]]] = []

    def score() -> dict[str, dict[str, np.ndarray]]:
        captions = caption_images(
            loaded, evaluate, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
        texts.append({dataset: captions})
        return {dataset: caption_scores(captions, evaluate, words)}

    result = run_experiment(
        loaded,
        task="caption",
        concept=concept,
        sets=[ItemSet(dataset, "target", tuple(f"{dataset}/{i}" for i in range(len(evaluate))))],
        evaluate=score,
        primary="concept_words",
        selected=ranking,
        others=others,
        ks=choose_ks(AttentionSites(loaded.model), percents, ks),
        alphas=alphas,
        n_controls=n_controls,
        seed=seed,
        direction=direction,
        positions=positions,
        config={
            "words": list(words),
            "n_select": len(select),
            "n_items": len(evaluate),
            "references": [e.references or [e.answer] for e in evaluate],
            "max_new_tokens": max_new_tokens,
            "comparisons": [o.criterion for o in others],
            "percents": list(percents) if not ks else None,
        },
        log=log,
    )
    record_texts(result, texts)
    if output is not None:
        result.save(output)
    return result
