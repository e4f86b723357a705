"""Small hand-written SVG figures for the HTML report and the notebook display.

Every function returns an ``<svg>`` element as text that needs no script and no external
resource: hover tooltips are SVG ``<title>`` children, colours are computed here. Text is
escaped; no element carries an ``id`` (several fragments may share one notebook page).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

#: matplotlib's viridis sampled at 16 evenly spaced points (perceptually uniform, colour-blind safe).
VIRIDIS = [
    "#440154", "#481a6c", "#472f7d", "#414487", "#39568c", "#31688e", "#2a788e", "#23888e",
    "#1f988b", "#22a884", "#35b779", "#54c568", "#7ad151", "#a5db36", "#d2e21b", "#fde725",
]  # fmt: skip
MISSING = "#d9d9d9"  # a value that was not computed (NaN)
OUTLINE = "#e4002b"  # top heads, the selected arm
FONT = "font-family='system-ui, sans-serif' font-size='11'"


def finite(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for people: ``digits`` significant digits, "–" for a missing value."""
    if not finite(value):
        return "–"
    return f"{value:.{digits}g}"


def colour(value: float, low: float, high: float) -> str:
    """``value`` on the viridis scale from ``low`` to ``high`` (hex); grey when NaN."""
    if not finite(value):
        return MISSING
    t = 0.5 if high <= low else min(1.0, max(0.0, (value - low) / (high - low)))
    position = t * (len(VIRIDIS) - 1)
    i = min(int(position), len(VIRIDIS) - 2)
    f = position - i
    a, b = VIRIDIS[i], VIRIDIS[i + 1]
    mixed = [round(int(a[k : k + 2], 16) * (1 - f) + int(b[k : k + 2], 16) * f) for k in (1, 3, 5)]
    return "#" + "".join(f"{c:02x}" for c in mixed)


@dataclass(frozen=True)
class Scale:
    """The ends of a colour scale and their labels."""

    low: float
    high: float
    low_text: str
    high_text: str

    def colour(self, value: float) -> str:
        return colour(value, self.low, self.high)


def colour_scale(values: Sequence[float], *, robust_from: int = 50) -> Scale:
    """A colour scale over the finite ``values``.

    With at least ``robust_from`` values it spans the 2nd to the 98th percentile, so that
    one outstanding head does not turn every other cell the same dark colour; values
    beyond it take the end colours and the labels read "≤ low" / "≥ high".
    """
    kept = sorted(v for v in values if finite(v))
    if not kept:
        return Scale(0.0, 1.0, fmt(math.nan), fmt(math.nan))
    low, high = kept[0], kept[-1]
    if len(kept) >= robust_from:
        q_low, q_high = kept[round(0.02 * (len(kept) - 1))], kept[round(0.98 * (len(kept) - 1))]
        if q_high > q_low:
            low_text = fmt(q_low) if q_low == low else f"≤ {fmt(q_low)}"
            high_text = fmt(q_high) if q_high == high else f"≥ {fmt(q_high)}"
            return Scale(q_low, q_high, low_text, high_text)
    return Scale(low, high, fmt(low), fmt(high))


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) inside ``[low, high]``."""
    span = high - low
    if not (finite(low) and finite(high)) or span <= 0:
        return [low] if finite(low) else []
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9)
    ticks = []
    value = first * step
    while value <= high + 1e-9 * step:
        ticks.append(round(value, 12) + 0.0)
        value = (first + len(ticks)) * step
    return ticks


def cell_size(n_layers: int, n_heads: int) -> int:
    """Pixels per heatmap cell: large for small models, small enough for big ones."""
    return max(5, min(18, 560 // max(n_heads, 1), 620 // max(n_layers, 1)))


def _ticks(n: int) -> list[int]:
    step = 1 if n <= 12 else 2 if n <= 24 else 5 if n <= 60 else 10
    return list(range(0, n, step))


def heatmap(
    values: Sequence[Sequence[float]],
    *,
    tooltips: Sequence[Sequence[str]] | None = None,
    outlined: Sequence[tuple[int, int]] = (),
    dimmed: Sequence[tuple[int, int]] = (),
    colours: Sequence[Sequence[str]] | None = None,
    css_class: str = "hp-heatmap",
    label: str = "",
) -> str:
    """A layers x heads heatmap, last layer on top, head 0 on the left.

    Args:
        values: ``[n_layers][n_heads]`` numbers (NaN: not computed, drawn grey).
        tooltips: the same shape of hover texts (default: head name and value).
        outlined: ``(layer, head)`` cells framed in red (e.g. the top heads).
        dimmed: cells drawn faded (e.g. outside a ranking's layer window).
        colours: precomputed fills (default: viridis over the finite values' range).
        label: the colour bar's caption.

    Each cell is ``<rect class="hp-cell" data-i="layer * n_heads + head">``.
    """
    n_layers, n_heads = len(values), len(values[0]) if values else 0
    size = cell_size(n_layers, n_heads)
    left, top, bottom = 34, 8, 58
    width, height = left + n_heads * size + 8, top + n_layers * size + bottom
    scale = colour_scale([v for row in values for v in row])
    faded = set(dimmed)
    parts = [
        f"<svg class='{css_class}' width='{width}' "
        f"height='{height}' viewBox='0 0 {width} {height}' role='img' {FONT}>",
        f"<g class='hp-cells' transform='translate({left},{top})'>",
    ]
    for layer in range(n_layers):
        y = (n_layers - 1 - layer) * size
        for head in range(n_heads):
            value = values[layer][head]
            fill = colours[layer][head] if colours is not None else scale.colour(value)
            tip = (
                tooltips[layer][head] if tooltips is not None else f"L{layer}H{head}: {fmt(value)}"
            )
            opacity = " opacity='0.35'" if (layer, head) in faded else ""
            parts.append(
                f"<rect class='hp-cell' data-i='{layer * n_heads + head}' x='{head * size}' "
                f"y='{y}' width='{size}' height='{size}' fill='{fill}'{opacity}>"
                f"<title>{html.escape(tip)}</title></rect>"
            )
    parts.append("</g>")
    parts.append(
        f"<g class='hp-outlines' transform='translate({left},{top})' pointer-events='none'>"
        + outlines(outlined, n_layers, size)
        + "</g>"
    )
    for layer in _ticks(n_layers):
        y = top + (n_layers - 1 - layer) * size + size / 2 + 4
        parts.append(f"<text x='{left - 4}' y='{y:g}' text-anchor='end'>{layer}</text>")
    for head in _ticks(n_heads):
        x = left + head * size + size / 2
        parts.append(
            f"<text x='{x:g}' y='{top + n_layers * size + 12}' text-anchor='middle'>{head}</text>"
        )
    parts.append(
        f"<text x='{left - 26}' y='{top + n_layers * size / 2:g}' text-anchor='middle' "
        f"transform='rotate(-90 {left - 26} {top + n_layers * size / 2:g})'>layer</text>"
        f"<text x='{left + n_heads * size / 2:g}' y='{top + n_layers * size + 24}' "
        "text-anchor='middle'>head</text>"
    )
    parts.append(colour_bar(left, top + n_layers * size + 32, scale, label))
    parts.append("</svg>")
    return "".join(parts)


def outlines(cells: Sequence[tuple[int, int]], n_layers: int, size: int) -> str:
    """Red frames around ``(layer, head)`` cells of a :func:`heatmap` with ``size``-pixel cells."""
    return "".join(
        f"<rect x='{head * size + 1}' y='{(n_layers - 1 - layer) * size + 1}' "
        f"width='{size - 2}' height='{size - 2}' fill='none' stroke='{OUTLINE}' "
        "stroke-width='2'/>"
        for layer, head in cells
    )


def colour_bar(x: float, y: float, scale: Scale, label: str, width: int = 160) -> str:
    """A horizontal viridis bar with the scale's end labels and a caption (16 swatches)."""
    step = width / len(VIRIDIS)
    swatches = "".join(
        f"<rect x='{x + i * step:g}' y='{y}' width='{step + 0.5:g}' height='8' fill='{c}'/>"
        for i, c in enumerate(VIRIDIS)
    )
    return (
        f"<g class='hp-colourbar'>{swatches}"
        f"<text class='hp-low' x='{x}' y='{y + 20}'>{html.escape(scale.low_text)}</text>"
        f"<text class='hp-high' x='{x + width}' y='{y + 20}' text-anchor='end'>"
        f"{html.escape(scale.high_text)}</text>"
        f"<text class='hp-label' x='{x + width + 6}' y='{y + 8}'>{html.escape(label)}</text></g>"
    )


def evr_curve(tokens: Sequence[str], evr: Sequence[float], *, width: int = 300) -> str:
    """EVR after each SOMP step, each point labelled with the token chosen at that step."""
    n = len(evr)
    height, left, top, bottom = 150, 34, 10, 56
    if n == 0:
        return ""
    high = max(max((v for v in evr if finite(v)), default=1.0), 1e-9)
    high = min(1.0, math.ceil(high * 10 + 1e-9) / 10)  # round up to a tenth
    plot_w, plot_h = width - left - 10, height - top - bottom
    xs = [left + (plot_w * (i + 0.5) / n) for i in range(n)]
    ys = [top + plot_h * (1 - (v if finite(v) else 0.0) / high) for v in evr]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    parts = [
        f"<svg class='hp-evr' width='{width}' "
        f"height='{height}' viewBox='0 0 {width} {height}' role='img' {FONT}>",
        f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' "
        "stroke='#999'/>",
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + plot_h}' stroke='#999'/>",
        f"<text x='{left - 4}' y='{top + 4}' text-anchor='end'>{fmt(high, 2)}</text>",
        f"<text x='{left - 4}' y='{top + plot_h + 4}' text-anchor='end'>0</text>",
        f"<text x='8' y='{top + plot_h / 2:g}' text-anchor='middle' "
        f"transform='rotate(-90 8 {top + plot_h / 2:g})'>EVR</text>",
        f"<polyline points='{points}' fill='none' stroke='#31688e' stroke-width='2'/>",
    ]
    for x, y, token, value in zip(xs, ys, tokens, evr, strict=True):
        short = token if len(token) <= 12 else token[:11] + "…"
        parts.append(
            f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3.5' fill='#31688e'>"
            f"<title>{html.escape(token)}: EVR {fmt(value)}</title></circle>"
            f"<text x='{x:.1f}' y='{top + plot_h + 10}' text-anchor='end' "
            f"transform='rotate(-45 {x:.1f} {top + plot_h + 10})'>{html.escape(short)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(
    controls: Sequence[float],
    *,
    selected: float | None,
    low: float | None = None,
    high: float | None = None,
    reference: float | None = None,
    others: Sequence[tuple[str, float]] = (),
    xlabel: str = "",
    title: str = "",
    width: int = 330,
) -> str:
    """The control sets' effects as a histogram, the selected heads' effect as a red line.

    Args:
        controls: one effect per matched random control set.
        selected: the selected heads' effect; low, high: its confidence interval (shaded).
        reference: a dashed grey line (e.g. 1 = the unmodified model).
        others: further arms drawn as labelled blue ticks (e.g. other rankings' heads).
    """
    height, left, right, top, bottom = 160, 30, 12, 22, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [v for v in (*controls, selected, low, high, reference) if finite(v)]
    points += [v for _, v in others if finite(v)]
    lo, hi = (min(points), max(points)) if points else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or 0.05 * (abs(hi) or 1.0)
    lo, hi = lo - pad, hi + pad

    def x_of(value: float) -> float:
        return left + plot_w * (value - lo) / (hi - lo)

    kept = [v for v in controls if finite(v)]
    n_bins = max(5, min(20, round(math.sqrt(len(kept))) * 2)) if kept else 0
    counts = [0] * n_bins
    for v in kept:
        counts[min(n_bins - 1, int((v - lo) / (hi - lo) * n_bins))] += 1
    tallest = max(counts, default=0) or 1
    parts = [
        f"<svg class='hp-hist' width='{width}' "
        f"height='{height}' viewBox='0 0 {width} {height}' role='img' {FONT}>",
        f"<text x='{left}' y='13' font-weight='600'>{html.escape(title)}</text>",
    ]
    if finite(low) and finite(high):
        parts.append(
            f"<rect x='{x_of(low):.1f}' y='{top}' width='{max(1.0, x_of(high) - x_of(low)):.1f}' "
            f"height='{plot_h}' fill='{OUTLINE}' opacity='0.15'>"
            f"<title>95% CI of the selected heads: {fmt(low)} to {fmt(high)}</title></rect>"
        )
    bin_w = plot_w / n_bins if n_bins else 0
    for i, count in enumerate(counts):
        if count:
            h = plot_h * count / tallest
            start, end = lo + (hi - lo) * i / n_bins, lo + (hi - lo) * (i + 1) / n_bins
            parts.append(
                f"<rect class='hp-bar' x='{left + i * bin_w + 0.5:.1f}' "
                f"y='{top + plot_h - h:.1f}' width='{max(bin_w - 1, 1):.1f}' height='{h:.1f}' "
                f"fill='#9aa5b1'><title>{count} control set(s) in [{fmt(start)}, {fmt(end)})"
                "</title></rect>"
            )
    parts.append(
        f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' "
        "stroke='#666'/>"
    )
    if finite(reference):
        x = x_of(reference)
        parts.append(
            f"<line x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{top + plot_h}' stroke='#777' "
            f"stroke-dasharray='3,3'><title>unmodified: {fmt(reference)}</title></line>"
        )
    for i, (name, value) in enumerate(others):
        if finite(value):
            x = x_of(value)
            parts.append(
                f"<line x1='{x:.1f}' y1='{top + 4}' x2='{x:.1f}' y2='{top + plot_h}' "
                f"stroke='#1f77b4' stroke-width='2'><title>{html.escape(name)}: {fmt(value)}"
                f"</title></line><text x='{x + 3:.1f}' y='{top + 12 + 11 * i}' fill='#1f77b4'>"
                f"{html.escape(name)}</text>"
            )
    if finite(selected):
        x = x_of(selected)
        parts.append(
            f"<line class='hp-selected' x1='{x:.1f}' y1='{top}' x2='{x:.1f}' "
            f"y2='{top + plot_h}' stroke='{OUTLINE}' stroke-width='2.5'>"
            f"<title>selected heads: {fmt(selected)}</title></line>"
        )
    for value in nice_ticks(lo, hi):
        x = x_of(value)
        parts.append(
            f"<line x1='{x:.1f}' y1='{top + plot_h}' x2='{x:.1f}' y2='{top + plot_h + 3}' "
            f"stroke='#666'/><text x='{x:.1f}' y='{top + plot_h + 13}' "
            f"text-anchor='middle'>{fmt(value)}</text>"
        )
    if kept:
        parts.append(
            f"<text x='{left - 4}' y='{top + 8}' text-anchor='end'>{tallest}</text>"
            f"<text x='{left - 4}' y='{top + plot_h}' text-anchor='end'>0</text>"
        )
    parts.append(
        f"<text x='{left + plot_w / 2:g}' y='{top + plot_h + 27}' text-anchor='middle' "
        f"fill='#555'>{html.escape(xlabel)}</text></svg>"
    )
    return "".join(parts)
