"""Figures, tables and one self-contained HTML report from the JSON artifacts.

The figure functions return :class:`matplotlib.figure.Figure` objects (built without
pyplot, so they display in a notebook and leave global state alone); only
:func:`write_report` writes files: the HTML (inline CSS, figures embedded as base64 PNG,
no external URL) and each PNG beside it.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from ._version import __version__
from .errors import InputError
from .io import atomic_write
from .ranking.controls import jaccard
from .ranking.explain import Explanation
from .ranking.head_ranking import HeadRanking
from .steering.comparison import SteeringRun

Artifact = HeadRanking | Explanation | SteeringRun


def evr_heatmap(ranking: HeadRanking, *, top_k: int = 10) -> Figure:
    """Layers x heads heatmap of a ranking's concept EVR, its top-k heads outlined.

    Args:
        ranking: ``evr`` of shape ``[n_layers, n_heads]``.
        top_k: how many of the best heads (by ``scores``) to outline.
    """
    evr = ranking.evr.float().numpy()
    n_layers, n_heads = evr.shape
    figure = Figure(figsize=(max(4.5, 0.45 * n_heads + 2.5), max(3.0, 0.15 * n_layers + 1.8)))
    axes = figure.add_subplot()
    image = axes.imshow(evr, aspect="auto", cmap="viridis", origin="lower")
    figure.colorbar(image, ax=axes, label=f"EVR ({ranking.n_atoms} atoms)")
    top = ranking.top(min(top_k, ranking.n_heads_total))
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
    axes.set_title(f"{ranking.concept}: concept EVR per head")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="small", frameon=False)
    figure.tight_layout()
    return figure


def jaccard_table(rankings: Sequence[HeadRanking], k: int = 10):
    """Jaccard overlap of the concepts' top-k head sets, as a square pandas DataFrame."""
    import pandas as pd

    names = [r.concept for r in rankings]
    tops = [set(r.top(min(k, r.n_heads_total))) for r in rankings]
    values = [[jaccard(a, b) for b in tops] for a in tops]
    return pd.DataFrame(values, index=names, columns=names)


def jaccard_heatmap(rankings: Sequence[HeadRanking], k: int = 10) -> Figure:
    """Heatmap of :func:`jaccard_table`, values written in the cells."""
    table = jaccard_table(rankings, k)
    size = max(3.0, 0.8 * len(table) + 2.0)
    figure = Figure(figsize=(size, size * 0.85))
    axes = figure.add_subplot()
    image = axes.imshow(table.to_numpy(), vmin=0.0, vmax=1.0, cmap="magma")
    axes.set_xticks(range(len(table)), table.columns, rotation=45, ha="right")
    axes.set_yticks(range(len(table)), table.index)
    for i in range(len(table)):
        for j in range(len(table)):
            value = table.iat[i, j]
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", color="grey")
    figure.colorbar(image, ax=axes, label="Jaccard")
    axes.set_title(f"Overlap of top-{k} head sets")
    figure.tight_layout()
    return figure


def figure_png(figure: Figure) -> bytes:
    """A figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


@dataclass
class ReportFigure:
    """A named figure of the report (``name`` is also its PNG file stem)."""

    name: str
    caption: str
    png: bytes


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
figure { margin: 1rem 0; } figcaption { font-size: 0.85rem; color: #555; }
img { max-width: 100%; } .meta { color: #666; font-size: 0.85rem; }
"""


def _table(frame) -> str:
    return frame.to_html(index=False, escape=True, border=0, float_format=lambda x: f"{x:.3f}")


def _figure_html(figure: ReportFigure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (
        f'<figure><img class="figure" id="fig-{html.escape(figure.name)}" '
        f'alt="{html.escape(figure.caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
    )


def build_report(
    artifacts: Sequence[Artifact], *, top_k: int = 10
) -> tuple[str, list[ReportFigure]]:
    """The report's HTML text and its figures (nothing is written).

    Args:
        artifacts: rankings, explanations and steering runs, in any mix.
        top_k: heads per ranking shown in tables, outlined in heatmaps and used for Jaccard.
    """
    if not artifacts:
        raise InputError("No artifacts to report on; pass ranking/explanation/steering JSON files.")
    rankings = [a for a in artifacts if isinstance(a, HeadRanking)]
    explanations = [a for a in artifacts if isinstance(a, Explanation)]
    runs = [a for a in artifacts if isinstance(a, SteeringRun)]
    figures: list[ReportFigure] = []
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>headpursuit report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>headpursuit report</h1>",
        f"<p class='meta'>headpursuit {html.escape(__version__)}; "
        f"{len(rankings)} rankings, {len(explanations)} explanations, "
        f"{len(runs)} steering runs.</p>",
    ]
    if rankings:
        parts.append("<h2>Heads ranked per concept</h2>")
    for index, ranking in enumerate(rankings):
        name = f"evr_{index}_{_slug(ranking.concept)}"
        caption = (
            f"{ranking.concept}: concept-restricted SOMP EVR per head "
            f"(model {ranking.model_id}); red squares: top {top_k} by {ranking.criterion}."
        )
        figures.append(ReportFigure(name, caption, figure_png(evr_heatmap(ranking, top_k=top_k))))
        parts.append(f"<h3>{html.escape(ranking.concept)}</h3>")
        parts.append(_figure_html(figures[-1]))
        parts.append(_table(ranking.to_frame().head(top_k)))
    if len(rankings) >= 2:
        figures.append(
            ReportFigure(
                "jaccard",
                f"Jaccard overlap of the concepts' top-{top_k} head sets.",
                figure_png(jaccard_heatmap(rankings, top_k)),
            )
        )
        parts.append("<h2>Overlap between concepts</h2>")
        parts.append(_figure_html(figures[-1]))
        parts.append(_table(jaccard_table(rankings, top_k).reset_index(names="concept")))
    if explanations:
        parts.append("<h2>Heads explained: SOMP tokens vs logit lens</h2>")
    for explanation in explanations:
        source = f" ({explanation.source})" if explanation.source else ""
        parts.append(
            f"<p class='meta'>{html.escape(explanation.model_id)}{html.escape(source)}, "
            f"{explanation.n_atoms} SOMP atoms over the full vocabulary, "
            f"{explanation.n_samples} samples.</p>"
        )
        parts.append(_table(explanation.to_frame()))
    if runs:
        parts.append("<h2>Steering examples</h2>")
    for run in runs:
        heads = ", ".join(str(h) for h in run.heads)
        controls = "; ".join(", ".join(str(h) for h in c) for c in run.controls)
        parts.append(
            f"<p class='meta'>{html.escape(run.concept or 'heads')} [{html.escape(heads)}] "
            f"scaled by α = {run.alpha:g} at {html.escape(run.positions)} positions; "
            f"matched random controls: {html.escape(controls)}.</p>"
        )
        parts.append(_table(run.to_frame()))
    parts.append("</body></html>")
    return "\n".join(parts), figures


def write_report(
    artifacts: Sequence[Artifact], path: str | os.PathLike[str], *, top_k: int = 10
) -> list[Path]:
    """Write the HTML report and its PNG figures beside it (each atomically).

    Returns:
        The written paths, the HTML first.
    """
    path = Path(path)
    text, figures = build_report(artifacts, top_k=top_k)
    written = []
    for figure in figures:
        png = path.with_name(f"{path.stem}_{figure.name}.png")
        written.append(atomic_write(png, lambda tmp, data=figure.png: Path(tmp).write_bytes(data)))
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return [path, *written]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[:40] or "concept"
