"""Statistics against hand computations: cluster bootstrap CIs and control p-values."""

from __future__ import annotations

import numpy as np
import pytest

from headpursuit.evaluation.stats import (
    bootstrap_ratio_ci,
    cluster_index,
    control_p_value,
    format_p,
)


def test_control_p_value_counts_controls_at_least_as_extreme():
    controls = [0.9, 0.8, 0.5, 0.95, 1.0]
    # Damage (direction "decrease"): controls at or below the selected value are as extreme.
    assert control_p_value(0.5, controls, larger=False) == pytest.approx((1 + 1) / 6)
    assert control_p_value(0.1, controls, larger=False) == pytest.approx(1 / 6)
    assert control_p_value(1.0, controls, larger=False) == pytest.approx(6 / 6)
    # Amplification ("increase"): controls at or above.
    assert control_p_value(0.95, controls, larger=True) == pytest.approx(3 / 6)
    # With 20 controls all less extreme, p = 1/21 < 0.05.
    assert control_p_value(0.0, [0.5] * 20, larger=False) == pytest.approx(1 / 21)


def test_format_p_writes_three_decimals_a_floor_and_a_dash_for_missing():
    assert format_p(1 / 21) == "0.048"
    assert format_p(1.0) == "1.000"
    assert format_p(0.0004) == "< 0.001"
    assert format_p(0.001) == "0.001"
    assert format_p(float("nan")) == "–"
    assert format_p(None) == "–"


def test_cluster_index_orders_by_first_appearance():
    assert cluster_index(["b", "a", "b", "c"]).tolist() == [0, 1, 0, 2]


def test_bootstrap_point_estimate_is_the_ratio_of_sums():
    numerator = [1, 0, 1, 1, 0, 1]
    denominator = [1, 1, 1, 1, 1, 2]
    estimate, low, high = bootstrap_ratio_ci(numerator, denominator, n_boot=500)
    assert estimate == pytest.approx(4 / 7)
    assert low <= estimate <= high


def test_bootstrap_of_a_constant_has_a_zero_width_interval():
    estimate, low, high = bootstrap_ratio_ci([1.0] * 10, n_boot=200)
    assert (estimate, low, high) == (1.0, 1.0, 1.0)


def test_cluster_bootstrap_resamples_whole_clusters():
    # Two clusters of identical items: any resample mean is 0, 0.5 (as weighted), or 1.
    values = [0.0] * 5 + [1.0] * 5
    clusters = ["a"] * 5 + ["b"] * 5
    rng_means = set()
    for seed in range(5):
        _, low, high = bootstrap_ratio_ci(values, clusters=clusters, n_boot=300, seed=seed)
        rng_means.update({round(low, 6), round(high, 6)})
    assert rng_means <= {0.0, 0.5, 1.0}
    # Item-level resampling of the same data gives many intermediate values instead.
    _, low, high = bootstrap_ratio_ci(values, n_boot=300, seed=0)
    assert 0.0 < low < 0.5 < high < 1.0


def test_bootstrap_interval_matches_a_hand_rolled_resample():
    rng = np.random.default_rng(7)
    values = rng.normal(size=40)
    clusters = [i // 4 for i in range(40)]
    estimate, low, high = bootstrap_ratio_ci(values, clusters=clusters, n_boot=1000, seed=3)
    # Oracle: resample the 10 clusters with numpy directly, same generator and draws.
    sums = np.array([values[i * 4 : (i + 1) * 4].sum() for i in range(10)])
    draws = np.random.default_rng(3).integers(0, 10, size=(1000, 10))
    means = sums[draws].sum(1) / (4 * 10)
    assert estimate == pytest.approx(values.mean())
    assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
