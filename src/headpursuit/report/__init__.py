"""The report: one interactive HTML file, notebook display of every artifact, paper figures.

* :func:`write_report` / ``headpursuit report`` write one self-contained HTML file (no
  external URL; it works offline and can be mailed) and, beside it, each figure as SVG
  and PNG for papers. The page shows, per concept (a selector), a layers x heads heatmap
  with the top heads framed; hovering a head shows its rank under every number the
  rankings carry, its SOMP tokens with the EVR curve and its logit-lens tokens; clicking
  pins it. Every steering run and experiment shows the selected heads' effect over the
  histogram of the matched control sets' effects (CI and p-value), and generations side
  by side with the changed words highlighted.
* Every artifact displays itself in a notebook (``_repr_html_``): this package registers
  one renderer per artifact kind with :func:`headpursuit.io.register_html`, and
  ``import headpursuit`` imports it. Artifacts never import the report.
* :mod:`headpursuit.report.figures` returns matplotlib figures to save in any format.

Why hand-written SVG and ~150 lines of plain JavaScript, not a plotting library: the
figures are a heatmap, histograms and a line, a few hundred SVG elements; plotly, the
well-kept option that works offline, must inline its 4.8 MB ``plotly.min.js`` (plotly
7.1.0) into every report and every notebook output, where the whole demo report is about
0.2 MB. Inline SVG also renders without any script (tooltips are SVG ``<title>``), so the
notebook display works in viewers that strip JavaScript, and the browser test can find
every cell by its class. No new dependency.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import atomic_write, register_html
from . import figures
from .diff import changed_fraction, diff_html, word_diff
from .figures import (
    evr_curves,
    evr_heatmap,
    experiment_figure,
    figure_bytes,
    figure_png,
    head_heatmap,
    jaccard_heatmap,
    jaccard_table,
    report_figures,
    steering_figure,
)
from .html import (
    ACTIVATIONS,
    EXPERIMENT,
    EXPLANATION,
    RANKING,
    STEERING,
    activations_html,
    build_page,
    experiment_html,
    explanation_html,
    ranking_html,
    steering_html,
)

FIGURE_FORMATS = ("svg", "png", "pdf")

register_html(RANKING, ranking_html)
register_html(EXPLANATION, explanation_html)
register_html(STEERING, steering_html)
register_html(EXPERIMENT, experiment_html)
register_html(ACTIVATIONS, activations_html)


def build_report(
    artifacts: Sequence[Any], *, top_k: int = 10, title: str = "headpursuit report"
) -> str:
    """The interactive report's HTML text (nothing is written).

    Args:
        artifacts: rankings, explanations, steering runs and experiment results, any mix;
            sections without artifacts are left out.
        top_k: heads per concept framed on the heatmap, listed in its table and used for
            the overlap between concepts.
    """
    return build_page(artifacts, top_k=top_k, title=title)


def write_report(
    artifacts: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    top_k: int = 10,
    formats: Sequence[str] = ("svg", "png"),
    title: str = "headpursuit report",
) -> list[Path]:
    """Write the HTML report and, beside it, each figure of :func:`report_figures` per format.

    Files are ``<stem>_<figure>.<format>`` next to ``path``, each written atomically.

    Args:
        formats: figure file formats among ``svg``, ``png``, ``pdf``; ``()`` writes only
            the HTML.

    Returns:
        The written paths, the HTML first.
    """
    unknown = [f for f in formats if f not in FIGURE_FORMATS]
    if unknown:
        raise InputError(
            f"Unknown figure format {unknown[0]!r}; choose among {', '.join(FIGURE_FORMATS)}."
        )
    path = Path(path)
    text = build_report(artifacts, top_k=top_k, title=title)
    written = [atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))]
    if formats:
        for name, figure in report_figures(artifacts, top_k=top_k).items():
            for format in formats:
                data = figure_bytes(figure, format)
                target = path.with_name(f"{path.stem}_{name}.{format}")
                written.append(atomic_write(target, lambda tmp, d=data: Path(tmp).write_bytes(d)))
    return written


__all__ = [
    "FIGURE_FORMATS",
    "activations_html",
    "build_report",
    "changed_fraction",
    "diff_html",
    "evr_curves",
    "evr_heatmap",
    "experiment_figure",
    "experiment_html",
    "explanation_html",
    "figure_bytes",
    "figure_png",
    "figures",
    "head_heatmap",
    "jaccard_heatmap",
    "jaccard_table",
    "ranking_html",
    "report_figures",
    "steering_figure",
    "steering_html",
    "word_diff",
    "write_report",
]
