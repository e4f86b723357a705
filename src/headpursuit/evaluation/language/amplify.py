"""Amplification: scale the concept's heads by α > 1 (default 5) and count concept words.

The protocol of :func:`~headpursuit.evaluation.language.wordfreq.run_wordfreq`, with the
direction "increase" (the control p-value counts the control sets whose effect is at least
as large as the selected heads') and a fluency cost per prompt: the perplexity of the
steered continuation under the unmodified model (``perplexity``; higher is less fluent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ...models.loading import LoadedModel
from ...ranking.criteria import DEFAULT_CRITERION
from ...ranking.head_ranking import HeadRanking
from ..experiment import ExperimentResult
from .wordfreq import COMPARISONS, MAX_NEW_TOKENS, WordTask, run_wordfreq


def run_amplify(
    loaded: LoadedModel,
    concept: str | WordTask = "colors",
    *,
    prompts: str | Path | Sequence[str] | None = None,
    rankings: Mapping[str, HeadRanking] | None = None,
    criterion: str = DEFAULT_CRITERION,
    comparisons: Sequence[str] = COMPARISONS,
    percents: Sequence[float] = (1.0, 2.0, 3.0),
    ks: Sequence[int] | None = None,
    alphas: Sequence[float] = (5.0,),
    n_controls: int = 20,
    seed: int = 0,
    split: str = "test",
    layers: tuple[int, int] | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 32,
    output: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> ExperimentResult:
    """Concept words and perplexity after amplifying the selected heads (arguments as
    :func:`~headpursuit.evaluation.language.wordfreq.run_wordfreq`).

    Returns:
        an :class:`~headpursuit.evaluation.experiment.ExperimentResult` (task "amplify",
        direction "increase") with per-prompt ``heldout_freq`` (primary), ``all_freq``,
        ``selection_freq`` and ``perplexity``.
    """
    return run_wordfreq(
        loaded,
        concept,
        prompts=prompts,
        rankings=rankings,
        criterion=criterion,
        comparisons=comparisons,
        percents=percents,
        ks=ks,
        alphas=alphas,
        n_controls=n_controls,
        seed=seed,
        split=split,
        layers=layers,
        max_new_tokens=max_new_tokens,
        fluency=True,
        direction="increase",
        task_name="amplify",
        batch_size=batch_size,
        output=output,
        log=log,
    )
