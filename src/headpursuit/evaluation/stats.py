"""Statistics that can tell an effect from noise: cluster bootstrap CIs and control p-values.

* :func:`bootstrap_ratio_ci` -- a percentile CI of ``Σ numerator / Σ denominator`` when
  whole clusters of items (all questions about one entity, all captions of one image)
  are resampled with replacement. With a denominator of ones it is the CI of a mean;
  with the unmodified model's per-item values it is the CI of a normalised score,
  paired by item.
* :func:`control_p_value` -- the share of matched random control sets whose effect is at
  least as large as the selected heads' effect, counted as ``(1 + b) / (1 + R)`` so that
  it is never 0 and is a valid p-value (Phipson & Smyth 2010): with R = 20 control sets
  the smallest possible value is 1/21 ≈ 0.048.
* :func:`format_p` -- how every table, report and CLI line writes a p-value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import InputError


def cluster_index(clusters: Sequence[object]) -> np.ndarray:
    """``[n]`` integer cluster id per item (in order of first appearance)."""
    ids: dict[object, int] = {}
    return np.array([ids.setdefault(c, len(ids)) for c in clusters], dtype=np.int64)


def bootstrap_ratio_ci(
    numerator: Sequence[float],
    denominator: Sequence[float] | None = None,
    clusters: Sequence[object] | None = None,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(estimate, low, high) of ``Σ numerator / Σ denominator`` with a cluster bootstrap.

    Args:
        numerator: ``[n]`` per-item values (e.g. 1 if the steered model is still right).
        denominator: ``[n]`` per-item values (e.g. the unmodified model's), default ones.
        clusters: ``[n]`` cluster label per item (default: every item its own cluster).
        n_boot: bootstrap resamples; level: the CI's coverage.

    Returns:
        The point estimate and the percentile interval. A resample whose denominator sums
        to 0 is dropped.
    """
    top = np.asarray(numerator, dtype=np.float64)
    bottom = np.ones_like(top) if denominator is None else np.asarray(denominator, dtype=np.float64)
    if top.shape != bottom.shape or top.ndim != 1 or top.size == 0:
        raise InputError("bootstrap_ratio_ci needs two equal-length, non-empty 1-D series.")
    if not 0 < level < 1:
        raise InputError(f"level must lie in (0, 1), got {level}.")
    groups = np.arange(top.size) if clusters is None else cluster_index(clusters)
    if groups.shape != top.shape:
        raise InputError("One cluster label per item is needed.")
    n_groups = int(groups.max()) + 1
    top_sums = np.bincount(groups, weights=top, minlength=n_groups)
    bottom_sums = np.bincount(groups, weights=bottom, minlength=n_groups)
    estimate = top_sums.sum() / bottom_sums.sum() if bottom_sums.sum() else float("nan")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    counts = np.stack([np.bincount(row, minlength=n_groups) for row in draws])  # [B, G]
    tops, bottoms = counts @ top_sums, counts @ bottom_sums
    ratios = tops[bottoms != 0] / bottoms[bottoms != 0]
    if ratios.size == 0:
        return float(estimate), float("nan"), float("nan")
    tail = (1 - level) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return float(estimate), float(low), float(high)


def control_p_value(selected: float, controls: Sequence[float], *, larger: bool = True) -> float:
    """``(1 + #{controls at least as extreme}) / (1 + R)``.

    Args:
        selected: the selected heads' effect.
        controls: the same effect for each of R matched random control sets.
        larger: True when a larger effect is more extreme (e.g. damage); False when smaller.
    """
    values = np.asarray(controls, dtype=np.float64)
    if values.size == 0:
        raise InputError("A p-value needs at least one control set.")
    extreme = values >= selected if larger else values <= selected
    return float((1 + extreme.sum()) / (1 + values.size))


def format_p(value: float | None) -> str:
    """A p-value for people: three decimals, "< 0.001" below that, "–" when not computed."""
    if value is None or math.isnan(value):
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` (linear interpolation)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
