"""Head-selection protocols, intervention modes, and the shared condition runner.

Selection protocols (all return a :class:`~headpursuit.HeadRanking`, higher = better):

* ``"evr"``: the paper's concept-restricted SOMP EVR (:func:`~headpursuit.rank_heads`).
* ``"specificity"``: concept EVR minus the mean EVR the same head gets from ``n_random``
  dictionaries of random vocabulary tokens of the same size (concept tokens excluded).
  It removes heads that any token dictionary explains well (with tied embeddings, the
  early heads that copy token embeddings).
* ``"logit_lens"``: the baseline. For every sample the head's residual contribution is
  read through the unembedding (``h @ U.T``, ``[vocab]`` logits), z-scored over the
  vocabulary, and the z-scores of the concept tokens averaged; the score is the mean over
  samples. (A continuous score: "fraction of concept tokens in the top-k" ties at 0 for
  most heads on a small model.)

Every protocol takes an optional layer window ``(min_layer, max_layer)``: heads outside
it score ``-inf`` and are never chosen.

Intervention modes, written as strings: a float (``"-1"``, ``"0"``, ``"-0.5"``, ``"5"``)
scales the heads' outputs by α; ``"mean"`` replaces them by their mean output over the
selection data (mean ablation).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ...activations.store import Activations
from ...errors import InputError
from ...heads import Head
from ...io import write_json
from ...models.loading import LoadedModel
from ...ranking.controls import matched_controls
from ...ranking.criteria import rank_heads
from ...ranking.head_ranking import HeadRanking
from ...steering.hooks import steer

METHODS = ("evr", "specificity", "logit_lens")


def select_ranking(
    method: str,
    activations: Activations,
    sites,
    token_ids: Sequence[int],
    *,
    concept: str = "concept",
    window: tuple[int, int] | None = None,
    n_atoms: int = 10,
    n_random: int = 5,
    seed: int = 0,
    candidate_ids: Sequence[int] | None = None,
) -> HeadRanking:
    """Rank heads with one of :data:`METHODS` (``"logit_lens"`` is the z-scored variant here)."""
    if method not in METHODS:
        raise InputError(f"Unknown selection method {method!r}; choose one of {METHODS}.")
    return rank_heads(
        activations,
        sites,
        token_ids,
        criterion="logit_lens_z" if method == "logit_lens" else method,
        concept=concept,
        n_atoms=n_atoms,
        n_random=n_random,
        random_pool=candidate_ids,
        seed=seed,
        layers=window,
    )


def heads_for_percent(percent: float, n_heads_total: int) -> int:
    """``round(percent% of heads)``, at least 1."""
    return max(1, round(percent / 100 * n_heads_total))


def parse_intervention(spec: str | float) -> tuple[str, float]:
    """``"mean"`` -> ("mean", 1.0); ``"-1"`` -> ("scale", -1.0)."""
    if isinstance(spec, str) and spec.strip().lower() in ("mean", "mean-ablation", "mean_ablation"):
        return "mean", 1.0
    try:
        return "scale", float(spec)
    except ValueError as error:
        raise InputError(f"Intervention {spec!r} is neither a number (α) nor 'mean'.") from error


def intervention_name(spec: str | float) -> str:
    mode, alpha = parse_intervention(spec)
    return "mean" if mode == "mean" else f"{alpha:g}"


@torch.inference_mode()
def random_controls(
    selected: Sequence[Head], n_layers: int, n_heads: int, *, seed: int = 0
) -> list[Head]:
    """Matched random controls, disjoint from ``selected``; when a layer holds too many
    selected heads for that, the overflow comes from the nearest layers (see
    :func:`~headpursuit.matched_controls` with ``overflow="nearest"``)."""
    return matched_controls(selected, n_layers, n_heads, seed=seed, borrow=True)


@dataclass
class Condition:
    """One evaluated arm: which heads, how many, how they were intervened on."""

    arm: str  # "baseline", "selected", "logit_lens", "random"
    k: int
    intervention: str
    seed: int | None
    heads: list[Head]


def run_conditions(
    loaded: LoadedModel,
    selected: HeadRanking,
    lens: HeadRanking,
    evaluate: Callable[[], dict[str, float]],
    *,
    ks: Sequence[int],
    interventions: Sequence[str],
    control_seeds: Sequence[int],
    mean_output: torch.Tensor,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, float], list[tuple[Condition, dict[str, float]]]]:
    """Evaluate the unmodified model, then every (k, intervention, arm) condition.

    Args:
        evaluate: runs the task on the (possibly steered) model and returns metrics.
        mean_output: ``[n_layers, n_heads, head_dim]`` mean head outputs for "mean" mode.

    Returns:
        (baseline metrics, [(condition, metrics), ...]).
    """
    from ...models.architectures import AttentionSites

    sites = AttentionSites(loaded.model)
    # Every arm is drawn before anything runs, so an impossible one fails fast.
    arms_by_k: dict[int, list[tuple[str, int | None, list[Head]]]] = {}
    for k in ks:
        chosen = selected.top(k)
        arms_by_k[k] = [("selected", None, chosen), ("logit_lens", None, lens.top(k))]
        arms_by_k[k] += [
            ("random", s, random_controls(chosen, sites.n_layers, sites.n_heads, seed=s))
            for s in control_seeds
        ]
    baseline = evaluate()
    rows: list[tuple[Condition, dict[str, float]]] = []
    for k in ks:
        arms = arms_by_k[k]
        for spec in interventions:
            mode, alpha = parse_intervention(spec)
            replacement = mean_output if mode == "mean" else None
            for arm, seed, heads in arms:
                with steer(loaded.model, heads, alpha, replacement=replacement, sites=sites):
                    metrics = evaluate()
                condition = Condition(arm, k, intervention_name(spec), seed, heads)
                rows.append((condition, metrics))
                if log is not None:
                    shown = " ".join(
                        f"{key}={value:.3f}" for key, value in metrics.items() if key[0] != "_"
                    )
                    log(
                        f"k={k} {condition.intervention} {arm}{'' if seed is None else seed}: {shown}"
                    )
    return baseline, rows


@dataclass
class TaskResult:
    """Results of one task run.

    Attributes:
        task: "qa", "wordfreq" or "amplify".
        concept: the concept whose heads were selected.
        config: every setting of the run (JSON-serialisable).
        baseline: metrics of the unmodified model.
        rows: one dict per condition: arm, k, intervention, seed, heads, raw metrics, and
            ``<metric>_norm`` = metric / baseline metric (``nan`` when the baseline is 0).
        metrics: names of the metrics, the first being the task's target metric.
    """

    task: str
    concept: str
    config: dict
    baseline: dict[str, float]
    rows: list[dict]
    metrics: list[str]

    @classmethod
    def build(
        cls,
        task: str,
        concept: str,
        config: dict,
        baseline: dict[str, float],
        conditions: list[tuple[Condition, dict[str, float]]],
    ) -> TaskResult:
        metrics = list(baseline)
        rows = [_row("baseline", 0, "none", None, [], baseline, baseline)]
        rows += [
            _row(c.arm, c.k, c.intervention, c.seed, c.heads, values, baseline)
            for c, values in conditions
        ]
        return cls(task, concept, config, baseline, rows, metrics)

    def to_frame(self):
        """A pandas DataFrame, one row per condition (baseline first)."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def summary(self):
        """Mean and std over control seeds: one row per (k, intervention, arm)."""
        frame = self.to_frame()
        columns = [c for c in frame.columns if c in self.metrics or c.endswith("_norm")]
        grouped = frame.groupby(["k", "intervention", "arm"], sort=False)[columns]
        mean = grouped.mean()
        std = grouped.std(ddof=0).add_suffix("_std")
        return mean.join(std).reset_index()

    def to_json(self) -> dict:
        return {
            "task": self.task,
            "concept": self.concept,
            "config": self.config,
            "baseline": self.baseline,
            "metrics": self.metrics,
            "rows": self.rows,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the results JSON atomically."""
        return write_json(path, self.to_json())


def _row(
    arm: str,
    k: int,
    intervention: str,
    seed: int | None,
    heads: list[Head],
    values: dict[str, float],
    baseline: dict[str, float],
) -> dict:
    row: dict = {
        "arm": arm,
        "k": k,
        "intervention": intervention,
        "seed": seed,
        "heads": " ".join(str(h) for h in heads),
    }
    for name, value in values.items():
        row[name] = value
        base = baseline[name]
        row[f"{name}_norm"] = value / base if base else float("nan")
    return row
