"""Figures for papers: matplotlib figures of every artifact, to save in any format.

Each function returns a :class:`matplotlib.figure.Figure` built without pyplot (it
displays in a notebook and leaves global state alone); save it with
``figure.savefig("heads.pdf")`` (or ``.svg``, ``.png``). :func:`report_figures` makes the
set the ``report`` command writes beside the HTML. matplotlib is imported when a figure is
made, not when the package is imported.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..evaluation.stats import format_p
from ..ranking.controls import jaccard
from ..ranking.explain import Explanation
from ..ranking.head_ranking import HeadRanking
from ..steering.comparison import SteeringRun
from .html import EXPERIMENT, EXPLANATION, RANKING, STEERING, split_artifacts, steering_effect

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def head_heatmap(ranking: HeadRanking, quantity: str = "scores", *, top_k: int = 10) -> Figure:
    """Layers x heads heatmap of one per-head number of a ranking, its top-k heads outlined.

    Args:
        ranking: ``scores``/``evr``/each table of shape ``[n_layers, n_heads]``.
        quantity: ``"scores"``, ``"evr"`` or the name of one of ``ranking.tables``.
        top_k: how many of the best heads (by ``scores``, inside the layer window) to outline.
    """
    tables = {"scores": ranking.scores, "evr": ranking.evr, **ranking.tables}
    if quantity not in tables:
        raise InputError(
            f"Unknown quantity {quantity!r} for this ranking; choose one of {', '.join(tables)}."
        )
    values = tables[quantity].float().numpy()
    n_layers, n_heads = values.shape
    figure = _figure(max(4.5, 0.45 * n_heads + 2.5), max(3.0, 0.15 * n_layers + 1.8))
    axes = figure.add_subplot()
    image = axes.imshow(values, aspect="auto", cmap="viridis", origin="lower")
    label = {"scores": f"{ranking.criterion} score", "evr": f"EVR ({ranking.n_atoms} atoms)"}
    figure.colorbar(image, ax=axes, label=label.get(quantity, quantity))
    top = ranking.top(min(top_k, len(ranking.eligible())))
    axes.scatter(
        [h.head for h in top],
        [h.layer for h in top],
        marker="s",
        s=60,
        facecolors="none",
        edgecolors="red",
        label=f"top {len(top)} ({ranking.criterion})",
    )
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_title(f"{ranking.concept}: {label.get(quantity, quantity)} per head")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="small", frameon=False)
    figure.tight_layout()
    return figure


def evr_heatmap(ranking: HeadRanking, *, top_k: int = 10) -> Figure:
    """:func:`head_heatmap` of the concept-restricted SOMP EVR."""
    return head_heatmap(ranking, "evr", top_k=top_k)


def jaccard_table(rankings: Sequence[HeadRanking], k: int = 10):
    """Jaccard overlap of the concepts' top-k head sets, as a square pandas DataFrame."""
    import pandas as pd

    names = [r.concept for r in rankings]
    tops = [set(r.top(min(k, len(r.eligible())))) for r in rankings]
    values = [[jaccard(a, b) for b in tops] for a in tops]
    return pd.DataFrame(values, index=names, columns=names)


def jaccard_heatmap(rankings: Sequence[HeadRanking], k: int = 10) -> Figure:
    """Heatmap of :func:`jaccard_table`, values written in the cells."""
    table = jaccard_table(rankings, k)
    size = max(3.0, 0.8 * len(table) + 2.0)
    figure = _figure(size, size * 0.85)
    axes = figure.add_subplot()
    image = axes.imshow(table.to_numpy(), vmin=0.0, vmax=1.0, cmap="magma")
    axes.set_xticks(range(len(table)), table.columns, rotation=45, ha="right")
    axes.set_yticks(range(len(table)), table.index)
    for i in range(len(table)):
        for j in range(len(table)):
            axes.text(j, i, f"{table.iat[i, j]:.2f}", ha="center", va="center", color="grey")
    figure.colorbar(image, ax=axes, label="Jaccard")
    axes.set_title(f"Overlap of top-{k} head sets")
    figure.tight_layout()
    return figure


def evr_curves(explanation: Explanation) -> Figure:
    """EVR after each SOMP step, one panel per head, each point labelled with its token."""
    n = len(explanation.heads)
    if n == 0:
        raise InputError("This explanation holds no heads to draw.")
    columns = min(n, 3)
    rows = math.ceil(n / columns)
    figure = _figure(3.4 * columns, 2.8 * rows)
    for index, item in enumerate(explanation.heads):
        axes = figure.add_subplot(rows, columns, index + 1)
        steps = range(1, len(item.evr) + 1)
        axes.plot(steps, item.evr, marker="o", color="#31688e")
        axes.set_xticks(list(steps), item.somp_tokens, rotation=45, ha="right", fontsize="small")
        axes.set_ylim(0, max(max(item.evr, default=0.0) * 1.15, 0.05))
        axes.set_title(str(item.head), fontsize="medium")
        if index % columns == 0:
            axes.set_ylabel("EVR")
    figure.suptitle(f"SOMP over the full vocabulary ({explanation.model_id})", fontsize="medium")
    figure.tight_layout()
    return figure


def _control_panel(
    axes: Any,
    controls: Sequence[float],
    selected: float | None,
    low: float | None,
    high: float | None,
    others: Sequence[tuple[str, float]],
    reference: float,
) -> None:
    finite = [c for c in controls if math.isfinite(c)]
    if finite:
        axes.hist(finite, bins=max(5, min(20, round(math.sqrt(len(finite))) * 2)), color="#9aa5b1")
    axes.axvline(reference, color="#777", linestyle="--", linewidth=1, label="unmodified")
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        axes.axvspan(low, high, color="#e4002b", alpha=0.15, label="95% CI")
    if selected is not None and math.isfinite(selected):
        axes.axvline(selected, color="#e4002b", linewidth=2, label="selected heads")
    for name, value in others:
        if math.isfinite(value):
            axes.axvline(value, color="#1f77b4", linewidth=1.5)
            axes.annotate(name, (value, 0.95), xycoords=("data", "axes fraction"),
                          fontsize="x-small", color="#1f77b4", rotation=90, va="top")  # fmt: skip
    axes.set_ylabel("control sets")


def experiment_figure(result: Any) -> Figure:
    """For each (k, α) and item set: the control sets' effects, the selected heads' effect
    with its 95% CI, other rankings' heads, and the unmodified model (1).

    Args:
        result: an experiment result (``kind == "headpursuit.experiment"``).
    """
    rows = result.summary()
    settings = result.settings()
    sets = sorted(result.sets, key=lambda s: s.role != "target")
    if not settings or not sets:
        raise InputError("This experiment holds no (k, alpha) setting or item set to draw.")
    figure = _figure(3.4 * len(sets), 2.6 * len(settings))
    for r, (k, alpha) in enumerate(settings):
        for c, set_ in enumerate(sets):
            axes = figure.add_subplot(len(settings), len(sets), r * len(sets) + c + 1)
            here = [x for x in rows if (x["set"], x["k"], x["alpha"]) == (set_.name, k, alpha)]
            chosen = next((x for x in here if x["arm"] == "selected"), {})
            controls = [
                result.normalised(arm, set_.name)
                for arm in result.arms
                if arm.arm == "control" and (arm.k, arm.alpha) == (k, alpha)
            ]
            _control_panel(
                axes,
                controls,
                chosen.get("value"),
                chosen.get("low"),
                chosen.get("high"),
                [(x["arm"], x["value"]) for x in here if x["arm"] != "selected"],
                1.0,
            )
            axes.set_title(
                f"{set_.name} ({set_.role}), k={k}, α={alpha:g}\np = {format_p(chosen.get('p'))}",
                fontsize="small",
            )
            axes.set_xlabel(f"{result.primary} / unmodified", fontsize="small")
    figure.axes[0].legend(fontsize="x-small", frameon=False)
    figure.suptitle(f"{result.task}: {result.concept} heads vs matched random controls")
    figure.tight_layout()
    return figure


def steering_figure(run: SteeringRun) -> Figure:
    """Share of words changed vs the unmodified generation: steered heads vs each control set."""
    effect = steering_effect(run)
    figure = _figure(4.2, 2.8)
    axes = figure.add_subplot()
    _control_panel(axes, effect.controls, effect.steered, None, None, [], 0.0)
    axes.set_xlabel("share of words changed vs unmodified")
    name = run.concept or "heads"
    axes.set_title(
        f"{name} × {run.alpha:g} vs {len(run.controls)} control set(s)", fontsize="small"
    )
    axes.legend(fontsize="x-small", frameon=False)
    figure.tight_layout()
    return figure


def report_figures(artifacts: Sequence[Any], *, top_k: int = 10) -> dict[str, Figure]:
    """The figures of a set of artifacts, by file stem (what ``headpursuit report`` saves).

    Per ranking its scores heatmap (``heads_<i>_<concept>_<criterion>``), the Jaccard
    overlap when there are several concepts, per explanation its EVR curves, per steering
    run the change vs its controls, per experiment its control histograms.
    """
    by_kind = split_artifacts(artifacts)
    figures: dict[str, Figure] = {}
    rankings = by_kind[RANKING]
    for i, ranking in enumerate(rankings):
        name = f"heads_{i}_{_slug(ranking.concept)}_{_slug(ranking.criterion)}"
        figures[name] = head_heatmap(ranking, top_k=top_k)
    if len({r.concept for r in rankings}) > 1:
        firsts: dict[str, HeadRanking] = {}
        for ranking in rankings:
            firsts.setdefault(ranking.concept, ranking)
        figures["jaccard"] = jaccard_heatmap(list(firsts.values()), top_k)
    for i, explanation in enumerate(by_kind[EXPLANATION]):
        if explanation.heads:
            figures[f"explanation_{i}"] = evr_curves(explanation)
    for i, run in enumerate(by_kind[STEERING]):
        figures[f"steering_{i}_{_slug(run.concept or 'heads')}"] = steering_figure(run)
    for i, result in enumerate(by_kind[EXPERIMENT]):
        figures[f"experiment_{i}_{_slug(result.task)}_{_slug(result.concept)}"] = experiment_figure(
            result
        )
    return figures


def figure_bytes(figure: Figure, format: str = "png") -> bytes:
    """A figure as ``format`` bytes (``"png"``, ``"svg"``, ``"pdf"``)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=format, dpi=150 if format == "png" else None)
    return buffer.getvalue()


def figure_png(figure: Figure) -> bytes:
    """A figure as PNG bytes."""
    return figure_bytes(figure, "png")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[:40] or "x"
