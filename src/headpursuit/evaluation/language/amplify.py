"""Amplification: scale the concept's heads by α > 1 (default 5) and count concept words.

The same protocol as :func:`~headpursuit.tasks.wordfreq.run_wordfreq`, with α > 1 and a
fluency proxy: the perplexity of the continuations under the unmodified model (higher
means less fluent). The target is an *increase* of ``heldout_freq_norm`` above 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ...models.loading import LoadedModel
from .selection import TaskResult
from .wordfreq import run_wordfreq


def run_amplify(
    loaded: LoadedModel,
    concept: str = "colors",
    *,
    prompts: str | Path | Sequence[str] | None = None,
    percents: Sequence[float] = (1.0, 2.0, 3.0),
    ks: Sequence[int] | None = None,
    alphas: Sequence[str] = ("5",),
    method: str = "specificity",
    window: tuple[int, int] | None = None,
    control_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    split_seed: int = 0,
    max_new_tokens: int = 24,
    max_prompts: int | None = None,
    output: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> TaskResult:
    """Concept-word frequency and perplexity after amplifying the selected heads.

    Returns:
        :class:`~headpursuit.tasks.selection.TaskResult` with metrics ``heldout_freq``,
        ``all_freq``, ``selection_freq`` and ``perplexity`` (each also ``*_norm``).
    """
    return run_wordfreq(
        loaded,
        concept,
        prompts=prompts,
        percents=percents,
        ks=ks,
        interventions=list(alphas),
        method=method,
        window=window,
        control_seeds=control_seeds,
        split_seed=split_seed,
        max_new_tokens=max_new_tokens,
        max_prompts=max_prompts,
        fluency=True,
        task="amplify",
        output=output,
        log=log,
    )
