"""Concept-word frequency in generations (the paper's toxicity protocol, for any concept).

1. The concept's words are split 70/30 (:func:`~headpursuit.tasks.metrics.heldout_split`).
2. The prompts are split in half: selection prompts and evaluation prompts.
3. Heads are selected with the 70% words' tokens as dictionary, on activations of the
   selection prompts followed by the unmodified model's own continuations.
4. Continuations of the evaluation prompts are generated under each intervention; the
   target is the frequency of the held-out 30% words, normalised by the unmodified model.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

from ...activations.capture import capture
from ...errors import InputError
from ...models.architectures import AttentionSites
from ...models.loading import LoadedModel
from ...ranking.concepts import BUILTIN_CONCEPTS, concept_from_words, read_word_list
from ...steering.generation import generate
from . import data
from .metrics import continuation_perplexity, heldout_split, word_frequency
from .selection import TaskResult, heads_for_percent, run_conditions, select_ranking


def load_words(concept: str) -> tuple[str, list[str]]:
    """(name, words) of a built-in concept, ``"profanity"``, or a word-list file."""
    if concept in BUILTIN_CONCEPTS or concept == "profanity":
        return concept, data.concept_words(concept)
    path = Path(concept)
    return path.stem, read_word_list(path)


def run_wordfreq(
    loaded: LoadedModel,
    concept: str = "colors",
    *,
    prompts: str | Path | Sequence[str] | None = None,
    percents: Sequence[float] = (1.0, 2.0, 3.0),
    ks: Sequence[int] | None = None,
    interventions: Sequence[str] = ("0",),
    method: str = "specificity",
    window: tuple[int, int] | None = None,
    control_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    n_atoms: int = 10,
    n_random: int = 5,
    split_seed: int = 0,
    max_new_tokens: int = 24,
    max_prompts: int | None = None,
    fluency: bool = False,
    task: str = "wordfreq",
    output: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> TaskResult:
    """Word-frequency suppression (or, with α > 1, amplification) of a concept.

    Args:
        concept: "colors", "countries", "profanity", another built-in, or a word-list file.
        prompts: a prompt file (RealToxicityPrompts JSONL, JSONL, or text), a list, or
            ``None`` for the bundled set (:func:`~headpursuit.tasks.data.default_prompts`).
        fluency: also report the perplexity of the continuations under the unmodified model.

    Metrics: ``heldout_freq`` (held-out words per continuation; the target), ``all_freq``
    (all concept words), ``selection_freq`` (the 70% words), and ``perplexity`` if asked.
    """
    sites = AttentionSites(loaded.model)
    name, words = load_words(concept)
    select_words, heldout_words = heldout_split(words, seed=split_seed)
    if prompts is None:
        prompt_list = data.default_prompts(name)
    elif isinstance(prompts, (str, Path)):
        prompt_list = data.read_prompts(prompts)
    else:
        prompt_list = list(prompts)
    shuffled = prompt_list[:]
    random.Random(split_seed).shuffle(shuffled)
    half = len(shuffled) // 2
    select_prompts, eval_prompts = shuffled[:half], shuffled[half:]
    if max_prompts is not None:
        select_prompts, eval_prompts = select_prompts[:max_prompts], eval_prompts[:max_prompts]
    if not select_prompts or not eval_prompts:
        raise InputError("Need at least two prompts (one to select heads, one to evaluate).")

    dictionary = concept_from_words(loaded.tokenizer, select_words, name=name)
    formatted, continuations = generate(loaded, select_prompts, max_new_tokens=max_new_tokens)
    texts = [p + c for p, c in zip(formatted, continuations, strict=True)]
    activations = capture(loaded, texts, pooling="mean", progress=False)
    ranking = select_ranking(
        method,
        activations,
        sites,
        dictionary.token_ids,
        concept=name,
        window=window,
        n_atoms=n_atoms,
        n_random=n_random,
        seed=split_seed,
    )
    lens = select_ranking(
        "logit_lens", activations, sites, dictionary.token_ids, concept=name, window=window
    )
    total = sites.n_layers * sites.n_heads
    chosen_ks = list(ks) if ks else [heads_for_percent(p, total) for p in percents]

    def evaluate() -> dict[str, float]:
        fed, outs = generate(loaded, eval_prompts, max_new_tokens=max_new_tokens)
        metrics = {
            "heldout_freq": word_frequency(outs, heldout_words),
            "all_freq": word_frequency(outs, words),
            "selection_freq": word_frequency(outs, select_words),
        }
        if fluency:
            # Scored by the unmodified model: hooks are lifted by the caller afterwards,
            # so perplexity is computed after leaving the steering block (see below).
            metrics["_pending"] = 0.0
            pending.append((fed, outs, metrics))
        return metrics

    pending: list = []
    baseline, conditions = run_conditions(
        loaded,
        ranking,
        lens,
        evaluate,
        ks=chosen_ks,
        interventions=list(interventions),
        control_seeds=list(control_seeds),
        mean_output=activations.pooled.mean(0),
        log=log,
    )
    if fluency:
        for fed, outs, metrics in pending:
            del metrics["_pending"]
            metrics["perplexity"] = continuation_perplexity(loaded, fed, outs)
    config = {
        "model_id": loaded.model_id,
        "concept": name,
        "method": method,
        "window": list(window) if window else None,
        "ks": chosen_ks,
        "interventions": list(interventions),
        "control_seeds": list(control_seeds),
        "n_atoms": n_atoms,
        "n_random": n_random,
        "split_seed": split_seed,
        "selection_words": select_words,
        "heldout_words": heldout_words,
        "n_dictionary_tokens": len(dictionary.token_ids),
        "n_selection_prompts": len(select_prompts),
        "n_eval_prompts": len(eval_prompts),
        "max_new_tokens": max_new_tokens,
    }
    result = TaskResult.build(task, name, config, baseline, conditions)
    if output is not None:
        result.save(output)
    return result
