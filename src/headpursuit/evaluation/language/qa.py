"""Question answering: do the concept's heads carry the answers of that concept only?

Target questions have answers in the concept (a country); non-target questions do not
(capital cities, continents, numbers). Heads are selected on texts about a disjoint set of
countries (:func:`~headpursuit.tasks.data.split_countries`) and evaluated on questions
about the others. Scores are token F1 (max over aliases), normalised by the unmodified
model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ...activations.capture import capture
from ...errors import InputError
from ...models.architectures import AttentionSites
from ...models.loading import LoadedModel
from ...ranking.concepts import concept_from_words, resolve_concept
from ...steering.generation import generate
from . import data
from .metrics import exact_match, normalize_answer, token_f1
from .selection import TaskResult, heads_for_percent, run_conditions, select_ranking

INSTRUCTION = "Answer with a short phrase only. "

#: Non-target categories whose answers are place names (cities, continents). They are
#: reported on their own and left out of ``nontarget_f1``: a capital-city question needs the
#: same geographic knowledge as a capital-to-country one.
PLACE_CATEGORIES = ("city", "continent")


def contains_answer(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if any normalised alias appears as a whole-word phrase in the normalised prediction."""
    pred = f" {normalize_answer(prediction)} "
    return float(any(f" {normalize_answer(a)} " in pred for a in answers if normalize_answer(a)))


def score_questions(
    loaded: LoadedModel,
    questions: Sequence[data.Question],
    *,
    max_new_tokens: int = 12,
    batch_size: int = 32,
) -> tuple[dict[str, float], list[str]]:
    """Generate answers and score them.

    Returns:
        (metrics, answers). Metrics: ``target_f1``; ``nontarget_f1`` over questions whose
        answers are no place names (numbers, everyday facts); ``target_em``,
        ``target_contains``, ``nontarget_contains``; ``nontarget_all_f1`` over every
        non-target question, capital cities included; ``<category>_f1`` per category.
    """
    prompts = [INSTRUCTION + q.question for q in questions]
    _, answers = generate(loaded, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    by_group: dict[str, list[tuple[float, float, float]]] = {}
    for q, a in zip(questions, answers, strict=True):
        scores = (token_f1(a, q.answers), exact_match(a, q.answers), contains_answer(a, q.answers))
        if q.target:
            by_group.setdefault("target", []).append(scores)
        else:
            by_group.setdefault("nontarget_all", []).append(scores)
            by_group.setdefault(q.category, []).append(scores)
            if q.category not in PLACE_CATEGORIES:
                by_group.setdefault("nontarget", []).append(scores)

    def mean(group: str, index: int) -> float:
        values = by_group.get(group, [])
        return sum(v[index] for v in values) / len(values) if values else float("nan")

    metrics = {
        "target_f1": mean("target", 0),
        "nontarget_f1": mean("nontarget", 0),
        "target_em": mean("target", 1),
        "target_contains": mean("target", 2),
        "nontarget_contains": mean("nontarget", 2),
        "nontarget_all_f1": mean("nontarget_all", 0),
    }
    groups = ("target", "nontarget", "nontarget_all")
    for category in sorted(c for c in by_group if c not in groups):
        metrics[f"{category}_f1"] = mean(category, 0)
    return metrics, answers


def run_qa(
    loaded: LoadedModel,
    *,
    percents: Sequence[float] = (1.0, 2.0, 3.0),
    ks: Sequence[int] | None = None,
    interventions: Sequence[str] = ("0",),
    method: str = "specificity",
    window: tuple[int, int] | None = None,
    control_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    n_atoms: int = 10,
    n_random: int = 5,
    split_seed: int = 0,
    n_sums: int = 20,
    triviaqa: str | Path | None = None,
    selection_texts: Sequence[str] | None = None,
    max_questions: int | None = None,
    max_new_tokens: int = 12,
    output: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> TaskResult:
    """Country QA with selected, logit-lens, matched-random heads and the unmodified model.

    Args:
        percents: k as a percentage of all heads (ignored if ``ks`` is given).
        interventions: α values as strings, or "mean" (mean ablation).
        method, window: selection protocol (see :mod:`~headpursuit.tasks.selection`).
        triviaqa: optional TriviaQA-style file; its items whose answer is a country are
            target. Heads are then selected on ``selection_texts`` (default: texts about
            all bundled countries), which must not overlap the file's questions.
        max_questions: evaluate at most this many target and non-target questions each.
        output: write the results JSON here.
    """
    sites = AttentionSites(loaded.model)
    select_rows, eval_rows = data.split_countries(split_seed)
    if triviaqa is not None:
        all_names = [a for r in data.countries() for a in r["aliases"]]
        questions = data.read_triviaqa(triviaqa, target_answers=all_names)
        texts = list(selection_texts or data.selection_texts_countries(data.countries()))
        concept = resolve_concept(loaded.tokenizer, "countries")
    else:
        questions = data.capital_to_country(eval_rows) + data.nontarget_questions(
            eval_rows, n_sums=n_sums, seed=split_seed
        )
        texts = list(selection_texts or data.selection_texts_countries(select_rows))
        # The dictionary: the selection countries only (evaluation answers stay unseen).
        words = [a for r in select_rows for a in r["aliases"]]
        concept = concept_from_words(loaded.tokenizer, words, name="countries")
    asked = {q.question for q in questions}
    if asked & set(texts):
        raise InputError("Selection texts overlap evaluation questions; keep them disjoint.")
    if max_questions is not None:
        target = [q for q in questions if q.target][:max_questions]
        other = [q for q in questions if not q.target][:max_questions]
        questions = target + other
    activations = capture(loaded, texts, pooling="mean", progress=False)
    ranking = select_ranking(
        method,
        activations,
        sites,
        concept.token_ids,
        concept="countries",
        window=window,
        n_atoms=n_atoms,
        n_random=n_random,
        seed=split_seed,
    )
    lens = select_ranking(
        "logit_lens", activations, sites, concept.token_ids, concept="countries", window=window
    )
    total = sites.n_layers * sites.n_heads
    chosen_ks = list(ks) if ks else [heads_for_percent(p, total) for p in percents]

    def evaluate() -> dict[str, float]:
        return score_questions(loaded, questions, max_new_tokens=max_new_tokens)[0]

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
    config = {
        "model_id": loaded.model_id,
        "method": method,
        "window": list(window) if window else None,
        "ks": chosen_ks,
        "interventions": list(interventions),
        "control_seeds": list(control_seeds),
        "n_atoms": n_atoms,
        "n_random": n_random,
        "split_seed": split_seed,
        "n_selection_texts": len(texts),
        "n_target_questions": sum(q.target for q in questions),
        "n_nontarget_questions": sum(not q.target for q in questions),
        "triviaqa": str(triviaqa) if triviaqa else None,
        "max_new_tokens": max_new_tokens,
    }
    result = TaskResult.build("qa", "countries", config, baseline, conditions)
    if output is not None:
        result.save(output)
    return result
