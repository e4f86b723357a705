"""One engine for every experiment: arms of heads, matched controls, and the statistics.

An experiment evaluates the model unmodified and under interventions ("arms") on one or
more item sets, and compares the heads a ranking selects with at least 20 matched random
control sets (same count per layer, disjoint from the selection, seeded) and with the
heads of other rankings (the paper's raw EVR, the logit lens):

* an **evaluator** is a function returning, for each item set, per-item values of one or
  more metrics (``{"countries": {"correct": array, "logprob": array}, ...}``); it is run
  once per arm inside :func:`~headpursuit.steer`;
* the **primary** metric, normalised by the unmodified model's (``Σ arm / Σ baseline``
  over items), is the effect read by the statistics: a cluster-bootstrap CI per arm
  (clusters: the items' entities) and, against the control distribution, a p-value
  (:func:`~headpursuit.evaluation.stats.control_p_value`);
* a set is *specific* at (k, α) when the selected heads' effect on the target set is more
  extreme than at least 95 % of the control sets (p < 0.05) while on every non-target set
  it is not (p ≥ 0.05: inside the controls' range).

The language and vision tasks build their item sets and evaluators and call
:func:`run_experiment`; the result is an :class:`ExperimentResult` artifact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..heads import Head, heads_to_text
from ..io import Fields, JsonArtifact, register_artifact
from ..models.architectures import AttentionSites
from ..models.loading import LoadedModel
from ..ranking.controls import draw_controls
from ..ranking.head_ranking import HeadRanking
from ..steering.hooks import steer
from .stats import bootstrap_ratio_ci, control_p_value, percentile

#: per set name -> per metric name -> per-item values
ItemValues = dict[str, dict[str, np.ndarray]]
Evaluator = Callable[[], ItemValues]
DIRECTIONS = ("decrease", "increase")
MIN_CONTROLS = 20


@dataclass(frozen=True)
class ItemSet:
    """An evaluated set of items.

    Attributes:
        name: e.g. ``"countries"``.
        role: ``"target"`` (the concept whose heads are steered) or ``"nontarget"``.
        clusters: ``[n]`` the entity of each item (bootstrap clusters).
    """

    name: str
    role: str
    clusters: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.role not in ("target", "nontarget"):
            raise InputError(f"An item set's role is 'target' or 'nontarget', not {self.role!r}.")


@dataclass
class ArmResult:
    """The evaluation of one arm.

    Attributes:
        arm: "baseline", "selected" (the ranking under test), another ranking's criterion
            ("evr", "logit_lens", ...), or "control".
        k, alpha: how many heads, and their scale (0 heads for the baseline).
        heads: the heads; seed: the control draw's seed; borrowed: ``{layer: count}`` heads
            a control borrowed from nearby layers.
        means: per set, per metric: the mean over items.
        items: per set, per metric: the value of each item (kept for non-control arms only).
    """

    arm: str
    k: int
    alpha: float
    heads: list[Head]
    means: dict[str, dict[str, float]]
    items: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seed: int | None = None
    borrowed: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0


@register_artifact
@dataclass
class ExperimentResult(JsonArtifact):
    """Every arm of one experiment, the item sets, and the protocol; statistics on demand.

    Attributes:
        task: e.g. ``"qa"``, ``"wordfreq"``, ``"amplify"``, ``"classify"``, ``"caption"``.
        concept: the concept whose heads were selected.
        model_id, fingerprint: the model.
        primary: the metric the statistics read; direction: "decrease" if the
            intervention is meant to lower it (suppression), "increase" otherwise.
        sets: the item sets.
        arms: baseline first, then every (k, α) arm.
        config: every protocol setting (criterion, ks, alphas, seeds, split, ...).
    """

    kind = "headpursuit.experiment"
    made_by = "headpursuit qa / wordfreq / amplify / classify / caption"

    task: str
    concept: str
    model_id: str
    fingerprint: str
    primary: str
    direction: str
    sets: list[ItemSet]
    arms: list[ArmResult]
    config: dict[str, Any] = field(default_factory=dict)
    n_boot: int = 2000

    # -- statistics -------------------------------------------------------------------------

    @property
    def baseline(self) -> ArmResult:
        return self.arms[0]

    def settings(self) -> list[tuple[int, float]]:
        """The (k, α) pairs evaluated, in order."""
        return list(dict.fromkeys((a.k, a.alpha) for a in self.arms if a.arm != "baseline"))

    def normalised(self, arm: ArmResult, set_name: str, metric: str | None = None) -> float:
        """``Σ arm / Σ baseline`` of a metric (default: the primary) on one set."""
        metric = metric or self.primary
        base = self.baseline.means[set_name].get(metric, math.nan)
        value = arm.means[set_name].get(metric, math.nan)
        return value / base if base else math.nan

    def control_values(
        self, k: int, alpha: float, set_name: str, metric: str | None = None
    ) -> list[float]:
        """The normalised metric of every control set evaluated at (k, α) on one set."""
        metric = metric or self.primary
        return [
            self.normalised(a, set_name, metric)
            for a in self.arms
            if (a.k, a.alpha) == (k, alpha)
            and a.arm == "control"
            and metric in a.means.get(set_name, {})
        ]

    def summary(self, metric: str | None = None) -> list[dict[str, Any]]:
        """One row per (k, α, arm other than control, set): effect, CI, controls, p-value.

        ``value`` is the normalised metric (default: the primary); ``low``/``high`` its 95 %
        cluster-bootstrap CI, paired by item with the unmodified model; ``controls_mean``,
        ``controls_p5``, ``controls_p95`` the distribution over the control sets that were
        evaluated on this metric; ``p`` the control p-value of the selected arm in the
        experiment's direction (other rankings' arms are not matched to these controls:
        their ``p`` is NaN).
        """
        metric = metric or self.primary
        rows = []
        larger = self.direction == "increase"
        for set_ in self.sets:
            base_items = self.baseline.items[set_.name].get(metric)
            if base_items is None:
                continue
            for k, alpha in self.settings():
                arms = [a for a in self.arms if (a.k, a.alpha) == (k, alpha)]
                controls = self.control_values(k, alpha, set_.name, metric)
                for arm in arms:
                    if arm.arm == "control" or metric not in arm.items.get(set_.name, {}):
                        continue
                    value, low, high = bootstrap_ratio_ci(
                        arm.items[set_.name][metric], base_items, set_.clusters, n_boot=self.n_boot
                    )
                    p = math.nan
                    if arm.arm == "selected" and controls:
                        p = control_p_value(value, controls, larger=larger)
                    rows.append(
                        {
                            "set": set_.name,
                            "role": set_.role,
                            "k": k,
                            "alpha": alpha,
                            "arm": arm.arm,
                            "value": value,
                            "low": low,
                            "high": high,
                            "n_controls": len(controls),
                            "controls_mean": float(np.mean(controls)) if controls else math.nan,
                            "controls_p5": percentile(controls, 5) if controls else math.nan,
                            "controls_p95": percentile(controls, 95) if controls else math.nan,
                            "p": p,
                            "heads": " ".join(heads_to_text(arm.heads)),
                        }
                    )
        return rows

    def verdicts(self, arm: str = "selected", level: float = 0.05) -> list[dict[str, Any]]:
        """Per (k, α): is ``arm`` significant (target p < level) and specific (also every
        non-target p ≥ level)? Without non-target sets (word frequency) specificity is not
        tested: ``specific`` is ``None`` and ``nontarget_p`` NaN."""
        rows = [r for r in self.summary() if r["arm"] == arm]
        out = []
        for k, alpha in self.settings():
            here = [r for r in rows if (r["k"], r["alpha"]) == (k, alpha)]
            target = [r for r in here if r["role"] == "target"]
            other = [r for r in here if r["role"] == "nontarget"]
            if not target:
                continue
            significant = all(r["p"] < level for r in target)
            contained = all(r["p"] >= level for r in other) if other else None
            out.append(
                {
                    "k": k,
                    "alpha": alpha,
                    "target_p": max(r["p"] for r in target),
                    "nontarget_p": min((r["p"] for r in other), default=math.nan),
                    "significant": significant,
                    "specific": None if contained is None else significant and contained,
                }
            )
        return out

    def to_frame(self):
        """A pandas DataFrame: one row per arm and set, with every metric's mean."""
        import pandas as pd

        rows = []
        for arm in self.arms:
            for set_name, metrics in arm.means.items():
                row = {
                    "arm": arm.arm,
                    "k": arm.k,
                    "alpha": arm.alpha,
                    "seed": arm.seed,
                    "set": set_name,
                }
                row.update(metrics)
                row["normalised"] = self.normalised(arm, set_name)
                rows.append(row)
        return pd.DataFrame(rows)

    def summary_frame(self):
        """:meth:`summary` as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.summary())

    def __repr__(self) -> str:
        n_controls = sum(a.arm == "control" for a in self.arms)
        return (
            f"ExperimentResult({self.task!r}, concept={self.concept!r}, model={self.model_id!r}, "
            f"{len(self.settings())} (k, alpha) settings, {n_controls} control arms)"
        )

    # -- JSON -------------------------------------------------------------------------------

    def body(self) -> dict:
        return {
            "task": self.task,
            "concept": self.concept,
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "primary": self.primary,
            "direction": self.direction,
            "n_boot": self.n_boot,
            "config": self.config,
            "sets": [
                {"name": s.name, "role": s.role, "clusters": list(s.clusters)} for s in self.sets
            ],
            "arms": [
                {
                    "arm": a.arm,
                    "k": a.k,
                    "alpha": a.alpha,
                    "seed": a.seed,
                    "heads": heads_to_text(a.heads),
                    "borrowed": {str(layer): n for layer, n in a.borrowed.items()},
                    "seconds": round(a.seconds, 3),
                    "means": a.means,
                    "items": a.items,
                }
                for a in self.arms
            ],
        }

    @classmethod
    def from_body(cls, fields: Fields) -> ExperimentResult:
        sets = [
            ItemSet(f.str("name"), f.str("role"), tuple(f.strs("clusters")))
            for f in fields.items("sets")
        ]
        sizes = {s.name: len(s.clusters) for s in sets}
        arms = [_arm_from(f, sizes) for f in fields.items("arms")]
        if not arms or arms[0].arm != "baseline":
            raise fields.error("the first arm must be the baseline")
        primary = fields.str("primary")
        for arm in arms:
            for name in sizes:
                if name not in arm.means or primary not in arm.means[name]:
                    raise fields.error(f"arm {arm.arm} lacks {primary!r} on set {name!r}")
        direction = fields.str("direction")
        if direction not in DIRECTIONS:
            raise fields.error(f"direction must be one of {DIRECTIONS}")
        config = fields.raw("config", {})
        if not isinstance(config, dict):
            raise fields.error("config must be an object")
        return cls(
            task=fields.str("task"),
            concept=fields.str("concept"),
            model_id=fields.str("model_id"),
            fingerprint=fields.str("fingerprint"),
            primary=primary,
            direction=direction,
            sets=sets,
            arms=arms,
            config=config,
            n_boot=fields.int("n_boot", 2000, minimum=10, maximum=1_000_000),
        )


def _arm_from(fields: Fields, sizes: dict[str, int]) -> ArmResult:
    means_raw = fields.raw("means")
    if not isinstance(means_raw, dict):
        raise fields.error("means must be an object")
    means: dict[str, dict[str, float]] = {}
    for set_name, metrics in means_raw.items():
        metric_fields = Fields(metrics, f"{fields.source} [means][{set_name}]")
        means[set_name] = {m: metric_fields.float(m, allow_null=True) for m in metric_fields.data}
    items_fields = Fields(fields.raw("items", {}), f"{fields.source} [items]")
    items: dict[str, dict[str, list[float]]] = {}
    for set_name in items_fields.data:
        per_metric = items_fields.nested(set_name)
        items[set_name] = {}
        for metric in per_metric.data:
            values = per_metric.floats(metric, allow_null=True)
            if set_name not in sizes or len(values) != sizes[set_name]:
                raise fields.error(f"items of set {set_name!r} do not match the set's size")
            items[set_name][metric] = values
    borrowed_raw = fields.raw("borrowed", {})
    if not isinstance(borrowed_raw, dict) or not all(
        isinstance(k, str) and k.isdigit() and isinstance(v, int) and v > 0
        for k, v in borrowed_raw.items()
    ):
        raise fields.error("borrowed must hold {layer: count}")
    seed = fields.raw("seed", None)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise fields.error("seed must be an integer or null")
    return ArmResult(
        arm=fields.str("arm"),
        k=fields.int("k", minimum=0),
        alpha=fields.float("alpha"),
        heads=fields.heads("heads"),
        means=means,
        items=items,
        seed=seed,
        borrowed={int(k): v for k, v in borrowed_raw.items()},
        seconds=fields.float("seconds", 0.0, minimum=0.0),
    )


# --- running -------------------------------------------------------------------------------


def heads_for_percent(percent: float, n_heads_total: int) -> int:
    """``round(percent % of the heads)``, at least 1."""
    if not 0 < percent <= 100:
        raise InputError(f"A head percentage must lie in (0, 100], got {percent}.")
    return max(1, round(percent / 100 * n_heads_total))


def complete_rankings(
    names: Sequence[str],
    given: Mapping[str, HeadRanking] | None,
    capture: Callable[[], Any],
    rank: Callable[[Any, str], HeadRanking],
    *,
    concept: str,
    log: Callable[[str], None] | None = None,
) -> dict[str, HeadRanking]:
    """``criterion -> ranking`` for every name in ``names``: the ``given`` ones as they are,
    the others ``rank(data, criterion)`` on ``data = capture()``, captured once, on first need."""
    say = log or (lambda text: None)
    known = dict(given or {})
    data: list[Any] = []
    for name in dict.fromkeys(names):
        if name in known:
            continue
        if not data:
            data.append(capture())
        start = time.perf_counter()
        known[name] = rank(data[0], name)
        say(f"Ranked heads for {concept} by {name} ({time.perf_counter() - start:.1f} s)")
    return known


def choose_ks(
    sites: AttentionSites, percents: Sequence[float], ks: Sequence[int] | None
) -> list[int]:
    """Explicit ``ks``, or each percentage of the model's heads (distinct values, in order:
    percentages of a small model can round to the same k, which is then run once)."""
    total = sites.n_layers * sites.n_heads
    return list(dict.fromkeys(ks or [heads_for_percent(p, total) for p in percents]))


def _evaluate(
    loaded: LoadedModel,
    sites: AttentionSites,
    evaluate: Evaluator,
    sets: Sequence[ItemSet],
    heads: Sequence[Head],
    alpha: float,
    positions: str,
    after: Evaluator | None = None,
) -> tuple[ItemValues, float]:
    """Per-item values of every metric on every set, with ``heads`` scaled by ``alpha``
    (and those of ``after``, run once the hooks are removed)."""
    start = time.perf_counter()
    if heads:
        with steer(loaded.model, heads, alpha, positions=positions, sites=sites):
            values = evaluate()
    else:
        values = evaluate()
    if after is not None:
        extra = after()
        values = {name: {**metrics, **extra.get(name, {})} for name, metrics in values.items()}
    for set_ in sets:
        if set_.name not in values:
            raise InputError(f"The evaluator returned nothing for set {set_.name!r}.")
        for name, per_item in values[set_.name].items():
            if len(per_item) != len(set_.clusters):
                raise InputError(
                    f"The evaluator returned {len(per_item)} {name!r} values for set "
                    f"{set_.name!r} of {len(set_.clusters)} items."
                )
    return values, time.perf_counter() - start


def run_experiment(
    loaded: LoadedModel,
    *,
    task: str,
    concept: str,
    sets: Sequence[ItemSet],
    evaluate: Evaluator,
    primary: str,
    selected: HeadRanking,
    others: Sequence[HeadRanking] = (),
    ks: Sequence[int],
    alphas: Sequence[float] = (-1.0,),
    n_controls: int = MIN_CONTROLS,
    seed: int = 0,
    direction: str = "decrease",
    positions: str = "all",
    headline: Evaluator | None = None,
    headline_controls: int = 5,
    headline_when: Callable[[str, int, float], bool] | None = None,
    after: Evaluator | None = None,
    config: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> ExperimentResult:
    """Evaluate the unmodified model, then every (k, α): the selected heads, the top-k of
    each other ranking, and ``n_controls`` matched random control sets.

    Args:
        sets: the item sets (one with role "target").
        evaluate: returns per-item metric values for every set (see module doc).
        primary: the metric the statistics read.
        selected: the ranking under test; others: comparison rankings (arm = criterion).
        ks: head counts; alphas: scales (−1 flips, 0 ablates, 5 amplifies).
        n_controls: matched control sets per (k, α) (at least 20 for a p-value below 0.05);
            control ``s`` is drawn with seed ``seed + s`` and is the same for every α.
        direction: "decrease" for suppression (damage), "increase" for amplification.
        headline: an optional second, costlier evaluator (e.g. greedy generation scored
            like the paper) run on the baseline, the rankings' arms and the first
            ``headline_controls`` control sets; ``headline_when(arm, k, alpha)`` can
            restrict it further (the baseline is always scored). Its metrics are added
            to those arms' means
            and items (prefixed by nothing: give them distinct names).
        after: an optional evaluator run right after each ``evaluate`` call, once the
            intervention's hooks are removed: it scores with the *unmodified* model what
            the intervened one produced (e.g. the perplexity of its generations; the
            texts are handed over by the two evaluators' shared state).
    """
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
    if not any(s.role == "target" for s in sets):
        raise InputError("An experiment needs one item set with role 'target'.")
    if n_controls < 1:
        raise InputError(f"n_controls must be at least 1, got {n_controls}.")
    if not ks or not alphas:
        raise InputError("Give at least one k and one alpha.")
    sites = AttentionSites(loaded.model)
    plan: list[tuple[str, int, list[Head], int | None, dict[int, int]]] = []
    for k in ks:
        chosen = selected.top(k)  # raises for an impossible k before any work
        plan.append(("selected", k, chosen, None, {}))
        plan += [(other.criterion, k, other.top(k), None, {}) for other in others]
        for s in range(n_controls):
            draw = draw_controls(chosen, sites.n_layers, sites.n_heads, seed=seed + s)
            plan.append(("control", k, draw.heads, seed + s, draw.borrowed))
    say = log or (lambda text: None)
    arms = []
    runs = [(None, ("baseline", 0, [], None, {}))] + [(a, step) for a in alphas for step in plan]
    for alpha, (name, k, heads, draw_seed, borrowed) in runs:
        scale = 1.0 if alpha is None else alpha
        values, seconds = _evaluate(
            loaded, sites, evaluate, sets, heads, scale, positions, after=after
        )
        keep = name != "control"
        wanted = name == "baseline" or headline_when is None or headline_when(name, k, scale)
        if headline is not None and wanted and (keep or draw_seed - seed < headline_controls):
            extra, more = _evaluate(loaded, sites, headline, sets, heads, scale, positions)
            values = {s.name: {**values[s.name], **extra[s.name]} for s in sets}
            seconds += more
        if any(primary not in values[s.name] for s in sets):
            raise InputError(f"The evaluator returned no {primary!r} for some set.")
        means = {s.name: {m: float(np.mean(v)) for m, v in values[s.name].items()} for s in sets}
        items = (
            {s.name: {m: [float(x) for x in v] for m, v in values[s.name].items()} for s in sets}
            if keep
            else {}
        )
        arms.append(ArmResult(name, k, scale, heads, means, items, draw_seed, borrowed, seconds))
        shown = ", ".join(f"{s}={m[primary]:.3f}" for s, m in means.items())
        label = name if draw_seed is None else f"{name} {draw_seed}"
        say(f"k={k} alpha={scale:g} {label}: {shown} ({seconds:.1f} s)")
    return ExperimentResult(
        task=task,
        concept=concept,
        model_id=loaded.model_id,
        fingerprint=loaded.fingerprint,
        primary=primary,
        direction=direction,
        sets=list(sets),
        arms=arms,
        config={
            "criterion": selected.criterion,
            "ranking_settings": selected.settings,
            "layers": None if selected.layers is None else list(selected.layers),
            "ks": list(ks),
            "alphas": list(alphas),
            "n_controls": n_controls,
            "control_seed": seed,
            "positions": positions,
            **(config or {}),
        },
    )
