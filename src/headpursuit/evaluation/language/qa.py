"""Fact questions under head interventions: do a concept's heads carry that concept only?

The protocol (docs/method.md, "Evaluation"):

1. Heads are ranked on the *dev* split: the dev questions of every concept are captured
   (plain ``"Question: ...\\nAnswer:"`` prompts, mean-pooled), and every head is scored for
   the concept's built-in word list under the chosen criterion.
2. Effects are measured on the *test* split, on the questions the unmodified model answers
   right (its answer ranks first among the concept's candidate answers): the target
   concept's questions and, as matched non-targets, the other concepts' questions of the
   same shape.
3. Scoring is teacher-forced: one forward pass per question gives the log-probability of
   every candidate answer as the next token. Small models have a favourite answer (SmolLM2
   says "red" to most colour questions), so each candidate's log-probability is calibrated
   by subtracting its mean over all questions of the set under the *unmodified* model (one
   fixed vector per set, used in every arm); ``correct`` is 1 when the right answer ranks
   first after calibration. The headline arms are also scored by greedy generation
   (``gen_f1``: token F1 of the first generated line against the answer, the paper's QA
   scoring).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...activations.capture import capture
from ...activations.store import Activations
from ...errors import InputError
from ...models.architectures import AttentionSites
from ...models.loading import LoadedModel
from ...protocol import DEFAULT_ALPHA
from ...ranking.concepts import resolve_concept, word_token_ids
from ...ranking.criteria import DEFAULT_CRITERION, DEFAULT_N_RANDOM, rank_heads
from ...ranking.head_ranking import HeadRanking
from ...steering.generation import generate, next_token_logprobs
from ...steering.prefix import LayerPrefixCache
from ..experiment import (
    ExperimentResult,
    ItemSet,
    choose_ks,
    complete_rankings,
    run_experiment,
)
from . import facts as fact_data
from .metrics import token_f1

#: Fact concept -> the built-in word list whose tokens rank its heads.
CONCEPT_WORDS = {"countries": "countries", "colours": "colors", "numbers": "numbers"}
#: The comparison rankings of every QA experiment.
COMPARISONS = ("evr", "logit_lens")


@dataclass
class FactSet:
    """The questions of one concept and split that the unmodified model answers right.

    Attributes:
        concept: the fact concept.
        facts: the questions kept.
        answers: the concept's candidate answers for this tokenizer.
        bias: ``[n_answers]`` each answer's mean log-probability over every question of the
            split under the unmodified model (the calibration).
        n_asked: how many questions of the split were asked before filtering.
        n_known: how many of them the model answers right (before the ``max_items`` cap).
    """

    concept: str
    facts: list[fact_data.Fact]
    answers: fact_data.AnswerSet
    bias: torch.Tensor
    n_asked: int
    n_known: int

    @property
    def item_set(self) -> tuple[str, ...]:
        return tuple(f.entity for f in self.facts)


def answer_logprobs(
    loaded: LoadedModel,
    facts: Sequence[fact_data.Fact],
    answers: fact_data.AnswerSet,
    *,
    batch_size: int = 32,
    prefix: LayerPrefixCache | None = None,
) -> torch.Tensor:
    """``[n, n_answers]`` log-probability of every candidate answer after each question."""
    prompts = [f.prompt for f in facts]
    return next_token_logprobs(
        loaded, prompts, answers.token_ids, batch_size=batch_size, prefix=prefix
    )


def score_facts(
    loaded: LoadedModel,
    facts: Sequence[fact_data.Fact],
    answers: fact_data.AnswerSet,
    bias: torch.Tensor,
    *,
    batch_size: int = 32,
    prefix: LayerPrefixCache | None = None,
) -> dict[str, np.ndarray]:
    """Teacher-forced scores per question (``prefix``: see :func:`next_token_logprobs`).

    Returns:
        ``correct``: 1 if the right answer has the highest calibrated score (log-probability
        minus ``bias``), else 0; ``logprob``: the right answer's log-probability.
    """
    logprobs = answer_logprobs(loaded, facts, answers, batch_size=batch_size, prefix=prefix)
    return _scores(logprobs, facts, answers, bias)


def _scores(
    logprobs: torch.Tensor,
    facts: Sequence[fact_data.Fact],
    answers: fact_data.AnswerSet,
    bias: torch.Tensor,
) -> dict[str, np.ndarray]:
    target = torch.tensor([answers.index(f.answer) for f in facts])
    rows = torch.arange(len(facts))
    calibrated = logprobs - bias
    correct = (calibrated > calibrated[rows, target][:, None]).sum(1) == 0
    return {
        "correct": correct.double().numpy(),
        "logprob": logprobs[rows, target].double().numpy(),
    }


def generation_scores(
    loaded: LoadedModel,
    facts: Sequence[fact_data.Fact],
    *,
    max_new_tokens: int = 6,
    batch_size: int = 32,
) -> dict[str, np.ndarray]:
    """Greedy answers scored like the paper's QA: ``gen_f1``, token F1 of the first line."""
    _, outputs = generate(
        loaded,
        [f.prompt for f in facts],
        max_new_tokens=max_new_tokens,
        chat=False,
        batch_size=batch_size,
    )
    return {
        "gen_f1": np.array(
            [
                token_f1(out.split("\n")[0], [f.answer, *fact_data._ALIASES.get(f.answer, [])])
                for out, f in zip(outputs, facts, strict=True)
            ]
        )
    }


#: Known questions kept per concept and split (a seeded sample when there are more): the
#: cost of every arm grows with it, and 200 items clustered by entity already give
#: bootstrap CIs of a few percentage points.
MAX_ITEMS = 200


def known_facts(
    loaded: LoadedModel,
    concept: str,
    split: str,
    *,
    seed: int = 0,
    batch_size: int = 32,
    max_items: int | None = MAX_ITEMS,
    max_asked: int | None = None,
) -> FactSet:
    """The questions of ``split`` the unmodified model answers right (teacher-forced,
    calibrated by the answers' mean log-probability over all the questions asked), at most
    ``max_items`` of them. ``max_asked`` asks only that many of the split's questions (a
    quick look; both samples are seeded by ``seed``)."""
    facts, answers = fact_data.questions(loaded.tokenizer, concept, split, seed=seed)
    if max_asked is not None and len(facts) > max_asked:
        order = torch.randperm(len(facts), generator=torch.Generator().manual_seed(seed))
        facts = [facts[i] for i in sorted(order[:max_asked].tolist())]
    if not facts:
        raise InputError(
            f"No {concept} question of the {split} split can be scored with this tokenizer."
        )
    logprobs = answer_logprobs(loaded, facts, answers, batch_size=batch_size)
    bias = logprobs.mean(0)
    scores = _scores(logprobs, facts, answers, bias)
    kept = [f for f, ok in zip(facts, scores["correct"], strict=True) if ok]
    n_known = len(kept)
    if max_items is not None and len(kept) > max_items:
        order = torch.randperm(len(kept), generator=torch.Generator().manual_seed(seed))
        kept = [kept[i] for i in sorted(order[:max_items].tolist())]
    return FactSet(concept, kept, answers, bias, len(facts), n_known)


def capture_questions(
    loaded: LoadedModel,
    split: str = "dev",
    *,
    concepts: Sequence[str] = fact_data.CONCEPTS,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> Activations:
    """Mean-pooled head outputs over every question of ``split`` of the given concepts."""
    prompts = []
    for concept in concepts:
        facts, _ = fact_data.questions(loaded.tokenizer, concept, split, seed=seed)
        prompts += [f.prompt for f in facts]
    return capture(loaded, prompts, pooling="mean", batch_size=batch_size, progress=progress)


def rank_concept(
    loaded: LoadedModel,
    activations: Activations,
    concept: str,
    criterion: str = DEFAULT_CRITERION,
    *,
    n_random: int = DEFAULT_N_RANDOM,
    seed: int = 0,
    layers: tuple[int, int] | None = None,
    lens_top_tokens: torch.Tensor | None = None,
) -> HeadRanking:
    """Every head scored for a fact concept's built-in word list (``lens_top_tokens``: see
    :func:`~headpursuit.ranking.criteria.rank_heads`)."""
    words = resolve_concept(loaded.tokenizer, CONCEPT_WORDS[concept])
    return rank_heads(
        activations,
        AttentionSites(loaded.model),
        words.token_ids,
        criterion=criterion,
        concept=concept,
        n_random=n_random,
        random_pool=word_token_ids(loaded.tokenizer),
        seed=seed,
        layers=layers,
        lens_top_tokens=lens_top_tokens,
    )


def run_qa(
    loaded: LoadedModel,
    concept: str,
    *,
    sets: dict[str, FactSet] | None = None,
    activations: Activations | None = None,
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
    headline: bool = True,
    headline_controls: int = 5,
    headline_when: Callable[[str, int, float], bool] | None = None,
    batch_size: int = 32,
    output: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> ExperimentResult:
    """The concept's heads against matched controls on target and matched non-target questions.

    Args:
        concept: one of :data:`~headpursuit.evaluation.language.facts.CONCEPTS`; its
            questions are the target set, the other concepts' the non-target sets.
        sets: precomputed :func:`known_facts` per concept (default: computed on ``split``).
        activations: precomputed :func:`capture_questions` of the dev split.
        rankings: precomputed :func:`rank_concept` rankings of this concept by criterion
            (missing ones are computed).
        criterion, comparisons: the ranking under test and the comparison rankings.
        percents / ks: head counts as % of all heads, or explicitly.
        alphas: scales (−1: the paper's flip).
        n_controls: matched control sets per (k, α).
        split: the split the effects are measured on ("test"; "dev" for protocol choices).
        headline: also score greedy generations for the baseline, the rankings' arms and
            the first ``headline_controls`` controls; ``headline_when(arm, k, alpha)``
            restricts which of them.
    """
    if concept not in fact_data.CONCEPTS:
        raise InputError(
            f"Unknown QA concept {concept!r}; choose one of {', '.join(fact_data.CONCEPTS)}."
        )
    sets = sets or {
        c: known_facts(loaded, c, split, seed=seed, batch_size=batch_size)
        for c in fact_data.CONCEPTS
    }
    for name, fact_set in sets.items():
        if not fact_set.facts:
            raise InputError(f"The model answers no {name} question of the {split} split right.")
    say = log or (lambda text: None)

    def dev_questions() -> Activations:
        if activations is not None:
            return activations
        say("Capturing the dev questions for head selection...")
        return capture_questions(loaded, "dev", seed=seed, batch_size=batch_size)

    known = complete_rankings(
        [criterion, *comparisons],
        rankings,
        dev_questions,
        lambda data, name: rank_concept(loaded, data, concept, name, seed=seed, layers=layers),
        concept=concept,
        log=say,
    )
    ranking = known[criterion]
    others = [known[c] for c in comparisons if c != criterion]
    sites = AttentionSites(loaded.model)
    chosen_ks = choose_ks(sites, percents, ks)
    order = [concept, *[c for c in sets if c != concept]]
    item_sets = [
        ItemSet(c, "target" if c == concept else "nontarget", sets[c].item_set) for c in order
    ]

    # Every arm scores the same questions: the layers below the first steered one are
    # computed once per batch (checked against the full pass, see steering/prefix.py).
    prefix = LayerPrefixCache(loaded, sites)

    def evaluate() -> dict[str, dict[str, np.ndarray]]:
        return {
            c: score_facts(
                loaded,
                sets[c].facts,
                sets[c].answers,
                sets[c].bias,
                batch_size=batch_size,
                prefix=prefix,
            )
            for c in order
        }

    def generate_all() -> dict[str, dict[str, np.ndarray]]:
        return {c: generation_scores(loaded, sets[c].facts, batch_size=batch_size) for c in order}

    result = run_experiment(
        loaded,
        task="qa",
        concept=concept,
        sets=item_sets,
        evaluate=evaluate,
        primary="correct",
        selected=ranking,
        others=others,
        ks=chosen_ks,
        alphas=alphas,
        n_controls=n_controls,
        seed=seed,
        headline=generate_all if headline else None,
        headline_controls=headline_controls,
        headline_when=headline_when,
        config={
            "split": split,
            "split_seed": seed,
            "prompt": fact_data.PROMPT,
            "n_asked": {c: sets[c].n_asked for c in order},
            "n_known": {c: sets[c].n_known for c in order},
            "n_items": {c: len(sets[c].facts) for c in order},
            "n_entities": {c: len(fact_data.entities(sets[c].facts)) for c in order},
            "n_selection_prompts": ranking.settings.get("n_samples"),
            "comparisons": [o.criterion for o in others],
            "percents": list(percents) if not ks else None,
        },
        log=log,
    )
    result.config["forward_passes"] = {
        "full": prefix.full_passes,
        "from_first_steered_layer": prefix.short_passes,
        "start_layers_trusted": {str(k): v for k, v in prefix.trusted.items()},
    }
    if output is not None:
        result.save(output)
    return result
