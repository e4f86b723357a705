"""Concept-word frequency in generations (the paper's toxicity protocol, for any concept).

The protocol (docs/method.md, "Evaluation"):

1. The concept's words are split 70/30 (:func:`~headpursuit.evaluation.language.metrics.heldout_split`):
   the 70 % *selection words* make the ranking's dictionary, the 30 % *held-out words*
   are the target, so a head cannot score by matching the very words it is judged on.
2. The distinct prompts are ordered by a seeded hash of their text: the first half are
   *selection prompts*, the rest *evaluation prompts*, cut in turn into a *dev* part (the
   first :data:`DEV_FRACTION`, for protocol choices) and a *test* part (the reported
   effects). A prompt's place depends only on its text and the seed.
3. Heads are ranked with the selection words' tokens as dictionary, on the mean-pooled
   head outputs over the selection prompts followed by the unmodified model's own greedy
   continuations.
4. The split's evaluation prompts are continued greedily in every arm of
   :func:`~headpursuit.evaluation.experiment.run_experiment` (the unmodified model, the
   selected heads, the comparison rankings' heads, matched control head sets); each prompt
   is an item (its own bootstrap cluster) with the held-out words in its continuation
   (``heldout_freq``, the primary metric), all concept words (``all_freq``) and the
   selection words (``selection_freq``). Amplification (:func:`run_amplify`, α > 1) also
   scores each continuation's perplexity under the unmodified model (``perplexity``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...activations.capture import capture
from ...activations.store import Activations
from ...errors import InputError
from ...models.architectures import AttentionSites
from ...models.loading import LoadedModel
from ...protocol import DEFAULT_ALPHA
from ...ranking.concepts import (
    BUILTIN_CONCEPTS,
    concept_from_words,
    read_word_list,
    word_token_ids,
)
from ...ranking.criteria import DEFAULT_CRITERION, DEFAULT_N_RANDOM, rank_heads
from ...ranking.head_ranking import HeadRanking
from ...steering.generation import generate
from ..experiment import (
    ExperimentResult,
    ItemSet,
    choose_ks,
    complete_rankings,
    run_experiment,
)
from . import data
from .metrics import continuation_perplexities, heldout_split, word_counts

SPLITS = ("dev", "test")
#: Share of the evaluation prompts kept for protocol choices (the rest is the test split).
DEV_FRACTION = 0.4
#: The comparison rankings of every word-frequency experiment.
COMPARISONS = ("evr", "logit_lens")
#: Tokens generated per prompt.
MAX_NEW_TOKENS = 48
#: Held-out concept words the unmodified model should emit on the evaluation prompts for a
#: frequency ratio to separate the selected heads from controls; fewer gets a warning.
MIN_HELDOUT_WORDS = 50


@dataclass(frozen=True)
class WordTask:
    """A concept's words and prompts, split for selection and evaluation (no model needed).

    Attributes:
        concept: the concept's name.
        words: every concept word; selection_words / heldout_words: their 70/30 split.
        selection_prompts: the prompts heads are ranked on.
        dev_prompts / test_prompts: the evaluation prompts of each split.
        seed: the seed of both splits.
    """

    concept: str
    words: list[str]
    selection_words: list[str]
    heldout_words: list[str]
    selection_prompts: list[str]
    dev_prompts: list[str]
    test_prompts: list[str]
    seed: int

    def prompts(self, split: str) -> list[str]:
        """The evaluation prompts of ``split`` ("dev" or "test")."""
        if split not in SPLITS:
            raise InputError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
        return self.dev_prompts if split == "dev" else self.test_prompts

    def counts(self, continuations: Sequence[str]) -> dict[str, np.ndarray]:
        """``[n]`` per continuation: held-out, all and selection concept words."""
        return {
            "heldout_freq": word_counts(continuations, self.heldout_words),
            "all_freq": word_counts(continuations, self.words),
            "selection_freq": word_counts(continuations, self.selection_words),
        }


def load_words(concept: str) -> tuple[str, list[str]]:
    """(name, words) of a built-in concept, ``"profanity"``, or a word-list file."""
    if concept in BUILTIN_CONCEPTS or concept == "profanity":
        return concept, data.concept_words(concept)
    path = Path(concept)
    if not path.is_file():
        raise InputError(
            f"Unknown concept {concept!r}: give a built-in concept "
            f"({', '.join(sorted(BUILTIN_CONCEPTS))}), 'profanity' or a word-list file."
        )
    return path.stem, read_word_list(path)


def _rank(seed: int, text: str) -> bytes:
    return hashlib.sha256(f"{seed}:{text}".encode()).digest()


def split_prompts(prompts: Sequence[str], seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """(selection, dev, test) prompts: the distinct prompts ordered by a seeded hash of
    their text, the first half for selection, then :data:`DEV_FRACTION` of the rest (at
    least one) for dev and the others for test; each part keeps the input order."""
    unique = list(dict.fromkeys(p.strip() for p in prompts if p.strip()))
    if len(unique) < 4:
        raise InputError(
            f"Word frequency needs at least 4 distinct prompts (selection, dev and test), "
            f"got {len(unique)}."
        )
    order = sorted(unique, key=lambda p: _rank(seed, p))
    half = len(order) // 2
    evaluation = order[half:]
    n_dev = min(max(round(DEV_FRACTION * len(evaluation)), 1), len(evaluation) - 1)
    selection, dev = set(order[:half]), set(evaluation[:n_dev])
    return (
        [p for p in unique if p in selection],
        [p for p in unique if p in dev],
        [p for p in unique if p not in selection and p not in dev],
    )


def word_task(
    concept: str = "colors",
    prompts: str | Path | Sequence[str] | None = None,
    *,
    seed: int = 0,
) -> WordTask:
    """Read and split a concept's words and prompts (everything checkable before a model loads).

    Args:
        concept: "colors", "countries", "profanity", another built-in, or a word-list file.
        prompts: a prompt file (RealToxicityPrompts JSONL, JSONL, or text), a list, or
            ``None`` for the bundled set (:func:`~headpursuit.evaluation.language.data.default_prompts`).
    """
    name, words = load_words(concept)
    selection_words, heldout_words = heldout_split(words, seed=seed)
    if prompts is None:
        prompt_list = data.default_prompts(name)
    elif isinstance(prompts, (str, Path)):
        if not Path(prompts).is_file():
            raise InputError(f"No prompt file at {prompts}.")
        prompt_list = data.read_prompts(prompts)
    else:
        prompt_list = list(prompts)
    selection, dev, test = split_prompts(prompt_list, seed)
    return WordTask(name, list(words), selection_words, heldout_words, selection, dev, test, seed)


def selection_activations(
    loaded: LoadedModel,
    task: WordTask,
    *,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 32,
) -> Activations:
    """Mean-pooled head outputs over the selection prompts (chat-formatted) followed by the
    unmodified model's own greedy continuations."""
    formatted, continuations = generate(
        loaded, task.selection_prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    texts = [p + c for p, c in zip(formatted, continuations, strict=True)]
    return capture(loaded, texts, pooling="mean", batch_size=batch_size, progress=False)


def rank_word_heads(
    loaded: LoadedModel,
    activations: Activations,
    task: WordTask,
    criterion: str = DEFAULT_CRITERION,
    *,
    n_random: int = DEFAULT_N_RANDOM,
    layers: tuple[int, int] | None = None,
) -> HeadRanking:
    """Every head scored for the task's *selection* words under ``criterion``."""
    dictionary = concept_from_words(loaded.tokenizer, task.selection_words, name=task.concept)
    if not dictionary.token_ids:
        raise InputError(
            f"None of the {task.concept} selection words is one token for this tokenizer."
        )
    return rank_heads(
        activations,
        AttentionSites(loaded.model),
        dictionary.token_ids,
        criterion=criterion,
        concept=task.concept,
        n_random=n_random,
        random_pool=word_token_ids(loaded.tokenizer),
        seed=task.seed,
        layers=layers,
    )


def run_wordfreq(
    loaded: LoadedModel,
    concept: str | WordTask = "colors",
    *,
    prompts: str | Path | Sequence[str] | None = None,
    rankings: Mapping[str, HeadRanking] | None = None,
    criterion: str = DEFAULT_CRITERION,
    comparisons: Sequence[str] = COMPARISONS,
    percents: Sequence[float] = (1.0, 2.0, 3.0),
    ks: Sequence[int] | None = None,
    alphas: Sequence[float] = (DEFAULT_ALPHA,),
    n_controls: int = 20,
    seed: int = 0,
    split: str = "test",
    layers: tuple[int, int] | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    fluency: bool = False,
    direction: str = "decrease",
    task_name: str = "wordfreq",
    batch_size: int = 32,
    output: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> ExperimentResult:
    """The concept's heads against matched controls on held-out concept words in generations.

    Args:
        concept: a concept name or word-list file (see :func:`word_task`), or a prepared
            :class:`WordTask` (then ``prompts`` and ``seed``'s split are its own).
        rankings: precomputed :func:`rank_word_heads` rankings by criterion (missing ones
            are computed from the selection prompts).
        criterion, comparisons: the ranking under test and the comparison rankings.
        percents / ks: head counts as % of all heads, or explicitly.
        alphas: scales (0 ablates, −1 flips, 5 amplifies).
        n_controls: matched control sets per (k, α); seed: the controls' first seed, the
            ranking's random dictionaries and (for a concept name) the word and prompt splits.
        split: the evaluation prompts the effects are measured on ("test"; "dev" for
            protocol choices).
        fluency: also score each continuation's perplexity under the unmodified model.
        direction: "decrease" (suppression) or "increase" (amplification).
    """
    task = concept if isinstance(concept, WordTask) else word_task(concept, prompts, seed=seed)
    eval_prompts = task.prompts(split)
    say = log or (lambda text: None)

    def selection() -> Activations:
        say(f"Generating and capturing {len(task.selection_prompts)} selection prompts...")
        return selection_activations(
            loaded, task, max_new_tokens=max_new_tokens, batch_size=batch_size
        )

    known = complete_rankings(
        [criterion, *comparisons],
        rankings,
        selection,
        lambda data, name: rank_word_heads(loaded, data, task, name, layers=layers),
        concept=task.concept,
        log=say,
    )
    ranking = known[criterion]
    others = [known[c] for c in comparisons if c != criterion]
    chosen_ks = choose_ks(AttentionSites(loaded.model), percents, ks)
    # The evaluator leaves its generations here for `after`, which scores them once the
    # intervention's hooks are lifted.
    generated: list[tuple[list[str], list[str]]] = []
    baseline_texts: list[str] = []

    def evaluate() -> dict[str, dict[str, np.ndarray]]:
        fed, outs = generate(
            loaded, eval_prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
        counts = task.counts(outs)
        if not baseline_texts:  # the first call is the unmodified model
            baseline_texts.extend(outs)
            emitted = int(counts["heldout_freq"].sum())
            say(
                f"Unmodified model: {emitted} held-out {task.concept} words in "
                f"{len(outs)} {split} continuations."
            )
            if emitted < MIN_HELDOUT_WORDS:
                say(
                    f"Warning: fewer than {MIN_HELDOUT_WORDS} held-out words; the frequency "
                    "ratios will be too noisy to tell heads from controls. Give more prompts "
                    "(--prompts) or more tokens (--max-new-tokens)."
                )
        generated.append((fed, outs))
        return {task.concept: counts}

    def perplexity() -> dict[str, dict[str, np.ndarray]]:
        fed, outs = generated.pop()
        return {
            task.concept: {
                "perplexity": continuation_perplexities(loaded, fed, outs, batch_size=batch_size)
            }
        }

    result = run_experiment(
        loaded,
        task=task_name,
        concept=task.concept,
        sets=[ItemSet(task.concept, "target", tuple(eval_prompts))],
        evaluate=evaluate,
        primary="heldout_freq",
        selected=ranking,
        others=others,
        ks=chosen_ks,
        alphas=alphas,
        n_controls=n_controls,
        seed=seed,
        direction=direction,
        after=perplexity if fluency else None,
        config={
            "split": split,
            "split_seed": task.seed,
            "selection_words": task.selection_words,
            "heldout_words": task.heldout_words,
            "n_selection_prompts": len(task.selection_prompts),
            "n_eval_prompts": len(eval_prompts),
            "max_new_tokens": max_new_tokens,
            "comparisons": [o.criterion for o in others],
            "percents": list(percents) if not ks else None,
        },
        log=log,
    )
    result.config["baseline_continuations"] = baseline_texts
    result.config["baseline_heldout_words"] = int(
        sum(result.baseline.items[task.concept]["heldout_freq"])
    )
    if output is not None:
        result.save(output)
    return result
