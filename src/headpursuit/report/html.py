"""HTML for the artifacts: one fragment per artifact (notebooks) and the interactive page.

The fragments (:func:`ranking_html`, :func:`explanation_html`, :func:`steering_html`,
:func:`experiment_html`, :func:`activations_html`) are static: inline CSS scoped to
``.hp``, inline SVG figures with hover tooltips, tables; no script and no ``id``, so they
display wherever a notebook shows HTML. :func:`build_page` puts them together into one
page, adds the per-head data as JSON and a small script (``assets/report.js``) for the
concept selector, the colour-by selector and the head detail panel.

Artifacts are recognised by their ``kind``; an experiment result is read through its
public attributes (``sets``, ``arms``, ``settings()``, ``normalised()``, ``summary()``,
``verdicts()``), so this module does not import the evaluation stage's classes.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .._version import __version__
from ..errors import InputError
from ..evaluation.stats import format_p
from ..ranking.controls import jaccard
from ..ranking.explain import Explanation, HeadExplanation
from ..ranking.head_ranking import HeadRanking
from ..steering.comparison import SteeringRun
from . import svg
from .diff import changed_fraction, diff_html
from .svg import fmt

RANKING = "headpursuit.ranking"
EXPLANATION = "headpursuit.explanation"
STEERING = "headpursuit.steering"
EXPERIMENT = "headpursuit.experiment"
ACTIVATIONS = "headpursuit.activations"
REPORTED = (RANKING, EXPLANATION, STEERING, EXPERIMENT)
MAX_CONTROL_COLUMNS = 3


def asset(name: str) -> str:
    """The text of ``assets/<name>`` (CSS and JavaScript shipped with the package)."""
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def _e(text: Any) -> str:
    return html.escape(str(text))


def _wrap(body: str) -> str:
    """A fragment: the scoped stylesheet and the body inside ``<div class="hp">``."""
    return f"<div class='hp'><style>{asset('report.css')}</style>{body}</div>"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], css_class: str = "") -> str:
    """An HTML table; numbers are right-aligned and formatted, text escaped, ``Markup`` kept."""
    cls = f" class='{css_class}'" if css_class else ""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for value in row:
            if isinstance(value, Markup):
                cells.append(f"<td>{value}</td>")
            elif isinstance(value, bool):
                text = "yes" if value else "no"
                cells.append(f"<td class='hp-{'yes' if value else 'no'}'>{text}</td>")
            elif isinstance(value, (int, float)) or value is None:
                text = str(value) if isinstance(value, int) else fmt(value)
                cells.append(f"<td class='hp-n'>{text}</td>")
            else:
                cells.append(f"<td>{_e(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Markup(str):
    """Text that is already HTML (not escaped again by :func:`_table`)."""


def _tokens(tokens: Sequence[str], numbers: Sequence[Any], digits: int = 3) -> str:
    items = "".join(
        f"<li><span class='hp-tok'>{_e(t)}</span> <span class='hp-num'>"
        f"{n if isinstance(n, int) else fmt(n, digits)}</span></li>"
        for t, n in zip(tokens, numbers, strict=True)
    )
    return f"<ol class='hp-tokens'>{items}</ol>"


# --- rankings -----------------------------------------------------------------------------


@dataclass
class Quantity:
    """One per-head number shown on a concept's heatmap (a ranking's scores, EVR, a table).

    ``values`` and ``ranks`` are flat, layer-major (index ``layer * n_heads + head``);
    a rank is 1-based among the heads inside the layer window with a finite value, high
    to low, and ``None`` elsewhere. ``top`` holds the indices of the top-k.
    """

    label: str
    values: list[float]
    ranks: list[int | None]
    top: list[int]


def _ranked(values: list[float], eligible: list[int]) -> list[int | None]:
    order = sorted((i for i in eligible if svg.finite(values[i])), key=lambda i: (-values[i], i))
    ranks: list[int | None] = [None] * len(values)
    for rank, i in enumerate(order, start=1):
        ranks[i] = rank
    return ranks


def _flat(table: Any) -> list[float]:
    return [float(x) for x in table.double().flatten().tolist()]


def _eligible_indices(ranking: HeadRanking) -> list[int]:
    n_heads = ranking.shape[1]
    return [h.layer * n_heads + h.head for h in ranking.eligible()]


def _quantity(label: str, values: list[float], eligible: list[int], top_k: int) -> Quantity:
    ranks = _ranked(values, eligible)
    top = sorted((i for i, r in enumerate(ranks) if r is not None), key=lambda i: ranks[i])
    return Quantity(label, values, ranks, top[:top_k])


def ranking_quantities(rankings: Sequence[HeadRanking], top_k: int) -> list[Quantity]:
    """Every per-head number the rankings of one concept carry, their primary's scores first.

    The scores of each ranking are ranked in its own order (:meth:`HeadRanking.order`); the
    EVR and the tables inside the first ranking's layer window.
    """
    primary = rankings[0]
    eligible = _eligible_indices(primary)
    quantities: list[Quantity] = []
    labels: set[str] = set()

    def unique(label: str) -> str:
        base, n = label, 2
        while label in labels:
            label, n = f"{base} #{n}", n + 1
        labels.add(label)
        return label

    for ranking in rankings:
        n_heads = ranking.shape[1]
        values = _flat(ranking.scores)
        order = [h.layer * n_heads + h.head for h in ranking.order()]
        ranks: list[int | None] = [None] * len(values)
        for rank, i in enumerate(order, start=1):
            ranks[i] = rank
        label = unique(f"{ranking.criterion} score")
        quantities.append(Quantity(label, values, ranks, order[:top_k]))
    by_evr = any(r.criterion == "evr" for r in rankings)  # then EVR is already a score
    for ranking in rankings:
        values = _flat(ranking.evr)
        if not by_evr and any(svg.finite(v) for v in values):
            label = unique(f"concept EVR ({ranking.n_atoms} atoms)")
            quantities.append(_quantity(label, values, eligible, top_k))
            break
    for ranking in rankings:
        for name, table in ranking.tables.items():
            values = _flat(table)
            if any(svg.finite(v) for v in values):
                quantities.append(_quantity(unique(name), values, eligible, top_k))
    return quantities


def _window_text(ranking: HeadRanking) -> str:
    return "" if ranking.layers is None else f", layers {ranking.layers[0]}–{ranking.layers[1]}"


def _cells(flat: Sequence[int], n_heads: int) -> list[tuple[int, int]]:
    return [(i // n_heads, i % n_heads) for i in flat]


def ranking_heatmap(rankings: Sequence[HeadRanking], top_k: int) -> str:
    """The primary ranking's scores as an SVG heatmap, top-k outlined, tooltips with ranks."""
    primary = rankings[0]
    n_layers, n_heads = primary.shape
    quantities = ranking_quantities(rankings, top_k)
    shown = quantities[0]
    eligible = set(_eligible_indices(primary))
    values = [shown.values[l * n_heads : (l + 1) * n_heads] for l in range(n_layers)]
    tooltips = []
    for l in range(n_layers):
        row = []
        for h in range(n_heads):
            i = l * n_heads + h
            parts = [f"L{l}H{h}"]
            for q in quantities:
                rank = f" (#{q.ranks[i]})" if q.ranks[i] is not None else ""
                parts.append(f"{q.label} {fmt(q.values[i])}{rank}")
            row.append(" · ".join(parts))
        tooltips.append(row)
    return svg.heatmap(
        values,
        tooltips=tooltips,
        outlined=_cells(shown.top, n_heads),
        dimmed=_cells([i for i in range(n_layers * n_heads) if i not in eligible], n_heads),
        label=shown.label,
    )


def top_table(rankings: Sequence[HeadRanking], top_k: int) -> str:
    """The primary ranking's top-k heads with every quantity, and their rank in the others."""
    primary = rankings[0]
    n_heads = primary.shape[1]
    quantities = ranking_quantities(rankings, top_k)
    header = ["rank", "head", *[q.label for q in quantities]]
    header += [f"rank by {q.label}" for q in quantities[1 : len(rankings)]]
    rows = []
    for rank, head in enumerate(primary.order()[:top_k], start=1):
        i = head.layer * n_heads + head.head
        row: list[Any] = [rank, str(head), *[q.values[i] for q in quantities]]
        row += [
            q.ranks[i] if q.ranks[i] is not None else "–" for q in quantities[1 : len(rankings)]
        ]
        rows.append(row)
    return _table(header, rows)


def ranking_html(ranking: HeadRanking, top_k: int = 10) -> str:
    """A ranking in a notebook: its heatmap (hover a cell for the numbers) and its top heads."""
    k = min(top_k, len(ranking.eligible()))
    meta = (
        f"<p class='hp-meta'><b>{_e(ranking.concept)}</b>: heads ranked by "
        f"<b>{_e(ranking.criterion)}</b> · model {_e(ranking.model_id)} · "
        f"{ranking.shape[0]} layers × {ranking.shape[1]} heads{_e(_window_text(ranking))}"
        f"{f' · SOMP {ranking.n_atoms} atoms' if ranking.n_atoms else ''} · "
        f"red frames: top {k}</p>"
    )
    return _wrap(
        meta + f"<div class='hp-row'>{ranking_heatmap([ranking], k)}{top_table([ranking], k)}</div>"
    )


# --- explanations -------------------------------------------------------------------------


def head_explanation_html(item: HeadExplanation, note: str = "") -> str:
    """One head's SOMP tokens with the EVR curve, and its logit-lens tokens."""
    evr = item.evr[-1] if item.evr else math.nan
    title = (
        f"<div class='hp-expl-title'>{_e(item.head)} <span class='hp-meta'>"
        f"EVR {fmt(evr)} with {len(item.somp_tokens)} atoms{_e(note)}</span></div>"
    )
    somp = "<div class='hp-sub'>SOMP tokens, full vocabulary (EVR after each)</div>" + _tokens(
        item.somp_tokens, item.evr
    )
    lens = (
        "<div class='hp-sub'>logit lens (samples with it in their top logits)</div>"
        + _tokens(item.lens_tokens, item.lens_counts)
        if item.lens_tokens
        else ""
    )
    curve = svg.evr_curve(item.somp_tokens, item.evr, width=270)
    return (
        f"<div class='hp-expl'>{title}<div class='hp-row'>{curve}<div>{somp}</div>"
        f"<div>{lens}</div></div></div>"
    )


def _explanation_meta(explanation: Explanation) -> str:
    source = f" · heads: {explanation.source}" if explanation.source else ""
    return (
        f"<p class='hp-meta'>model {_e(explanation.model_id)} · {explanation.n_atoms} SOMP "
        f"atoms over the full vocabulary · {explanation.n_samples} samples{_e(source)}</p>"
    )


def explanation_body(explanation: Explanation) -> str:
    return _explanation_meta(explanation) + "".join(
        head_explanation_html(item) for item in explanation.heads
    )


def explanation_html(explanation: Explanation) -> str:
    """An explanation in a notebook: per head, the SOMP tokens, EVR curve and logit lens."""
    return _wrap(explanation_body(explanation))


# --- steering -----------------------------------------------------------------------------


@dataclass
class SteeringEffect:
    """How much the generations changed: mean :func:`changed_fraction` over the prompts.

    ``p`` is ``(1 + #{controls >= steered}) / (1 + n_controls)`` (NaN without controls).
    """

    steered: float
    controls: list[float] = field(default_factory=list)

    @property
    def p(self) -> float:
        if not self.controls:
            return math.nan
        return (1 + sum(c >= self.steered for c in self.controls)) / (1 + len(self.controls))


def steering_effect(run: SteeringRun) -> SteeringEffect:
    """The steered and each control set's mean share of words changed vs the unmodified text."""

    def mean_change(outputs: Sequence[str]) -> float:
        pairs = list(zip(run.unmodified, outputs, strict=True))
        return sum(changed_fraction(a, b) for a, b in pairs) / len(pairs) if pairs else math.nan

    return SteeringEffect(
        mean_change(run.steered), [mean_change(outputs) for outputs in run.control_outputs]
    )


def steering_body(run: SteeringRun) -> str:
    heads = ", ".join(str(h) for h in run.heads)
    controls = "; ".join("[" + ", ".join(str(h) for h in c) + "]" for c in run.controls)
    concept = f"<b>{_e(run.concept)}</b> heads" if run.concept else "heads"
    meta = (
        f"<p class='hp-meta'>{concept} [{_e(heads)}] scaled by α = {run.alpha:g} at "
        f"{_e(run.positions)} positions · model {_e(run.model_id)} · "
        f"{len(run.controls)} matched random control set(s): {_e(controls) or 'none'}</p>"
    )
    effect = steering_effect(run)
    p = f"p = {format_p(effect.p)}" if run.controls else "no controls"
    figure = svg.histogram(
        effect.controls,
        selected=effect.steered,
        reference=0.0,
        xlabel="share of words changed vs unmodified",
        title=f"steered vs {len(run.controls)} control set(s): {p}",
    )
    note = (
        "<p class='hp-meta' style='max-width:30rem'>Effect: the share of words that differ "
        "from the unmodified generation (word-level alignment), averaged over the prompts; "
        f"steered {fmt(effect.steered)}, controls "
        f"{', '.join(fmt(c) for c in effect.controls[:8]) or '–'}"
        f"{' …' if len(effect.controls) > 8 else ''}. p counts the control sets changing at "
        "least as much, (1 + b) / (1 + n): with one control set it cannot go below 0.5. "
        "Highlighted: words dropped (red, struck) or inserted (yellow) relative to the "
        "unmodified text.</p>"
    )
    shown = run.control_outputs[:MAX_CONTROL_COLUMNS]
    header = ["prompt", "unmodified", f"steered (α = {run.alpha:g})"]
    header += [f"control {s + 1}" for s in range(len(shown))]
    rows = []
    for i, prompt in enumerate(run.prompts):
        before, after = diff_html(run.unmodified[i], run.steered[i])
        row: list[Any] = [prompt, Markup(before), Markup(after)]
        row += [Markup(diff_html(run.unmodified[i], outputs[i])[1]) for outputs in shown]
        rows.append(row)
    more = ""
    if len(run.control_outputs) > MAX_CONTROL_COLUMNS:
        extra = [
            [prompt, s + 1, Markup(diff_html(run.unmodified[i], outputs[i])[1])]
            for s, outputs in enumerate(run.control_outputs)
            if s >= MAX_CONTROL_COLUMNS
            for i, prompt in enumerate(run.prompts)
        ]
        more = (
            f"<details><summary>{len(extra)} more control generations</summary>"
            f"{_table(['prompt', 'control', 'generation'], extra, 'hp-gen')}</details>"
        )
    return (
        meta + f"<div class='hp-row'>{figure}{note}</div>" + _table(header, rows, "hp-gen") + more
    )


def steering_html(run: SteeringRun) -> str:
    """A steering run in a notebook: the change vs controls, and the generations diffed."""
    return _wrap(steering_body(run))


# --- experiments --------------------------------------------------------------------------


def _control_effects(result: Any, k: int, alpha: float, set_name: str) -> list[float]:
    return [
        result.normalised(arm, set_name)
        for arm in result.arms
        if arm.arm == "control" and (arm.k, arm.alpha) == (k, alpha)
    ]


def experiment_body(result: Any) -> str:
    rows = result.summary()
    verdicts = result.verdicts()
    settings = result.settings()
    n_controls = max((r["n_controls"] for r in rows), default=0)
    meta = (
        f"<p class='hp-meta'><b>{_e(result.task)}</b> · concept <b>{_e(result.concept)}</b> · "
        f"model {_e(result.model_id)} · primary metric <b>{_e(result.primary)}</b> "
        f"(the intervention should {_e(result.direction)} it) · {len(settings)} (k, α) "
        f"setting(s) · up to {n_controls} matched random control sets each</p>"
    )
    verdict_table = _table(
        ["k", "α", "target p", "smallest non-target p", "significant", "specific"],
        [
            [v["k"], v["alpha"], v["target_p"], v["nontarget_p"], v["significant"], v["specific"]]
            for v in verdicts
        ],
    )
    order = sorted(result.sets, key=lambda s: s.role != "target")
    panels = []
    for k, alpha in settings:
        figures = []
        for set_ in order:
            here = [r for r in rows if (r["set"], r["k"], r["alpha"]) == (set_.name, k, alpha)]
            chosen = next((r for r in here if r["arm"] == "selected"), None)
            others = [(r["arm"], r["value"]) for r in here if r["arm"] != "selected"]
            p = format_p(None if chosen is None else chosen["p"])
            figures.append(
                svg.histogram(
                    _control_effects(result, k, alpha, set_.name),
                    selected=None if chosen is None else chosen["value"],
                    low=None if chosen is None else chosen["low"],
                    high=None if chosen is None else chosen["high"],
                    reference=1.0,
                    others=others,
                    xlabel=f"{result.primary} / unmodified",
                    title=f"{set_.name} ({set_.role}): p = {p}",
                )
            )
        panels.append(
            f"<h4 class='hp-sub'>k = {k}, α = {alpha:g}</h4><div class='hp-row'>"
            + "".join(figures)
            + "</div>"
        )
    legend = (
        "<p class='hp-meta'>Grey bars: the matched random control sets' effects; red line: the "
        "selected heads, shaded: its 95% cluster-bootstrap CI; blue: other rankings' top-k "
        "heads; dashed: the unmodified model (1).</p>"
    )
    summary = _table(
        ["set", "role", "k", "α", "arm", "value", "95% CI", "controls mean",
         "controls 5–95%", "p", "heads"],
        [
            [r["set"], r["role"], r["k"], r["alpha"], r["arm"], r["value"],
             f"{fmt(r['low'])} – {fmt(r['high'])}", r["controls_mean"],
             f"{fmt(r['controls_p5'])} – {fmt(r['controls_p95'])}", r["p"], r["heads"]]
            for r in rows
        ],
    )  # fmt: skip
    return (
        meta
        + verdict_table
        + legend
        + "".join(panels)
        + f"<details><summary>Summary table ({len(rows)} rows)</summary>{summary}</details>"
    )


def experiment_html(result: Any) -> str:
    """An experiment in a notebook: verdicts, the selected arm over the controls, the table."""
    return _wrap(experiment_body(result))


# --- activations --------------------------------------------------------------------------


def activations_html(activations: Any) -> str:
    """Activations in a notebook: their shape, the mean output norm per head, a few prompts."""
    norms = activations.pooled.float().norm(dim=-1).mean(0)  # [n_layers, n_heads]
    values = [[float(x) for x in row] for row in norms.tolist()]
    facts = _table(
        ["samples", "layers", "heads", "head_dim", "d_model", "pooling", "model"],
        [[activations.n_samples, activations.n_layers, activations.n_heads,
          activations.head_dim, activations.d_model, activations.pooling,
          activations.model_id]],
    )  # fmt: skip
    prompts = activations.prompts[:5]
    listing = "".join(f"<li>{_e(p)}</li>" for p in prompts)
    more = len(activations.prompts) - len(prompts)
    prompt_html = (
        f"<div class='hp-sub'>prompts</div><ol class='hp-tokens'>{listing}</ol>"
        + (f"<p class='hp-meta'>… and {more} more</p>" if more > 0 else "")
        if prompts
        else ""
    )
    figure = svg.heatmap(values, label="mean ‖z‖ per head (head space)")
    return _wrap(f"{facts}<div class='hp-row'>{figure}<div>{prompt_html}</div></div>")


# --- the page -----------------------------------------------------------------------------


@dataclass
class HeadGroup:
    """The rankings of one concept on one model; the first is the primary one."""

    label: str
    rankings: list[HeadRanking]

    @property
    def primary(self) -> HeadRanking:
        return self.rankings[0]


def group_rankings(rankings: Sequence[HeadRanking]) -> list[HeadGroup]:
    """Rankings grouped by (concept, model weights, shape), in the order first seen."""
    groups: dict[tuple, list[HeadRanking]] = {}
    for ranking in rankings:
        groups.setdefault((ranking.concept, ranking.fingerprint, ranking.shape), []).append(ranking)
    concepts = [key[0] for key in groups]
    out = []
    for key, members in groups.items():
        label = key[0]
        if concepts.count(key[0]) > 1:
            label = f"{key[0]} ({members[0].model_id}, {key[1][:8]})"
        out.append(HeadGroup(label, members))
    return out


def _round(value: float) -> float | None:
    return float(f"{value:.4g}") if svg.finite(value) else None


def _explained(explanations: Sequence[Explanation]) -> tuple[dict[str, str], dict[str, dict]]:
    """``fingerprint|head -> HTML`` of every explained head, and ``fingerprint -> {id: text}``."""
    blocks: dict[str, str] = {}
    texts: dict[str, dict] = {}
    for explanation in explanations:
        known = texts.setdefault(explanation.fingerprint, {})
        note = f" · {explanation.source}" if explanation.source else ""
        for item in explanation.heads:
            key = f"{explanation.fingerprint}|{item.head}"
            blocks[key] = blocks.get(key, "") + head_explanation_html(item, note)
            known.update(zip(item.somp_ids, item.somp_tokens, strict=True))
            known.update(zip(item.lens_ids, item.lens_tokens, strict=True))
    return blocks, texts


def _group_data(group: HeadGroup, top_k: int, texts: dict[int, str]) -> dict:
    primary = group.primary
    n_layers, n_heads = primary.shape
    quantities = ranking_quantities(group.rankings, top_k)
    support = primary.support.reshape(n_layers * n_heads, -1).tolist() if primary.n_atoms else []
    named = any(t in texts for row in support for t in row)
    return {
        "label": group.label,
        "fingerprint": primary.fingerprint,
        "model": primary.model_id,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "size": svg.cell_size(n_layers, n_heads),
        "n_ranked": len(primary.eligible()),
        "n_atoms": primary.n_atoms,
        "atoms": [[texts[t] for t in row if t in texts] for row in support] if named else [],
        "quantities": [_quantity_data(q) for q in quantities],
    }


def _quantity_data(quantity: Quantity) -> dict:
    scale = svg.colour_scale(quantity.values)
    return {
        "label": quantity.label,
        "values": [_round(v) for v in quantity.values],
        "ranks": quantity.ranks,
        "top": quantity.top,
        "colours": [scale.colour(v) for v in quantity.values],
        "low": scale.low_text,
        "high": scale.high_text,
    }


def _script_json(data: Any) -> str:
    """JSON that is safe inside ``<script>``: no ``<``, ``>`` or ``&`` characters."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def jaccard_html(groups: Sequence[HeadGroup], top_k: int) -> str:
    """The overlap of the concepts' top-k head sets as a coloured table."""
    tops = [set(g.primary.top(min(top_k, len(g.primary.eligible())))) for g in groups]
    rows = []
    for group, a in zip(groups, tops, strict=True):
        cells = []
        for b in tops:
            value = jaccard(a, b)
            text = "#fff" if value < 0.55 else "#111"
            cells.append(
                Markup(
                    f"<span style='display:block;text-align:center;background:"
                    f"{svg.colour(value, 0.0, 1.0)};color:{text};padding:0 0.3rem'>"
                    f"{value:.2f}</span>"
                )
            )
        rows.append([group.label, *cells])
    return _table(["", *[g.label for g in groups]], rows)


def _heads_section(groups: Sequence[HeadGroup], top_k: int, has_explanations: bool) -> str:
    options = "".join(f"<option value='{i}'>{_e(g.label)}</option>" for i, g in enumerate(groups))
    first = ranking_quantities(groups[0].rankings, top_k)
    quantity_options = "".join(
        f"<option value='{i}'>{_e(q.label)}</option>" for i, q in enumerate(first)
    )
    maps, tables = [], []
    for i, group in enumerate(groups):
        k = min(top_k, len(group.primary.eligible()))
        primary = group.primary
        others = ", ".join(r.criterion for r in group.rankings[1:])
        meta = (
            f"<p class='hp-meta'>model {_e(primary.model_id)} · ranked by "
            f"<b>{_e(primary.criterion)}</b>{_e(_window_text(primary))}"
            f"{f' · also ranked by {_e(others)}' if others else ''} · red frames: top {k}"
            f"{'; faded: outside the layer window' if primary.layers is not None else ''}</p>"
        )
        hidden = "" if i == 0 else " hidden"
        maps.append(
            f"<div class='hp-group' data-group='{i}'{hidden}>"
            f"{meta}{ranking_heatmap(group.rankings, k)}</div>"
        )
        tables.append(
            f"<div class='hp-group-table' data-group='{i}'{hidden}><h3>Top {k} heads of "
            f"{_e(group.label)}</h3>{top_table(group.rankings, k)}</div>"
        )
    hint = (
        "Hover a head for its ranks and tokens; click to pin it."
        if has_explanations
        else "Hover a head for its ranks; click to pin it. (No explanation was given: "
        "`headpursuit explain` adds SOMP and logit-lens tokens.)"
    )
    return (
        "<section id='heads'><h2>Heads per concept</h2>"
        "<div class='hp-controls'>"
        f"<label>Concept<select id='hp-concept'>{options}</select></label>"
        f"<label>Colour by<select id='hp-quantity'>{quantity_options}</select></label></div>"
        f"<div class='hp-heads'><div id='hp-maps'>{''.join(maps)}</div>"
        f"<aside id='hp-detail'><p class='hp-hint'>{_e(hint)}</p></aside></div>"
        f"{''.join(tables)}</section>"
    )


def split_artifacts(artifacts: Sequence[Any]) -> dict[str, list[Any]]:
    """The artifacts by kind; anything the report cannot draw is one clear error."""
    if not artifacts:
        raise InputError(
            "No artifacts to report on; pass ranking, explanation, steering or experiment "
            "JSON files."
        )
    by_kind: dict[str, list[Any]] = {kind: [] for kind in REPORTED}
    for index, artifact in enumerate(artifacts):
        kind = getattr(artifact, "kind", None)
        if kind not in by_kind:
            raise InputError(
                f"Artifact {index + 1} is {kind or type(artifact).__name__!r}; the report draws "
                "rankings, explanations, steering runs and experiment results."
            )
        by_kind[kind].append(artifact)
    return by_kind


def build_page(
    artifacts: Sequence[Any], *, top_k: int = 10, title: str = "headpursuit report"
) -> str:
    """The interactive report as one HTML text: no external URL, works offline.

    Args:
        artifacts: rankings, explanations, steering runs and experiment results, any mix.
        top_k: heads outlined per concept, listed in its table and used for the overlap.
    """
    if top_k < 1:
        raise InputError(f"top_k must be at least 1, got {top_k}.")
    by_kind = split_artifacts(artifacts)
    groups = group_rankings(by_kind[RANKING])
    explanations = by_kind[EXPLANATION]
    blocks, texts = _explained(explanations)
    counts = {
        "rankings": len(by_kind[RANKING]),
        "explanations": len(explanations),
        "steering runs": len(by_kind[STEERING]),
        "experiments": len(by_kind[EXPERIMENT]),
    }
    models = sorted({a.model_id for a in artifacts})
    sections: list[tuple[str, str, str]] = []
    if groups:
        sections.append(("heads", "Heads", _heads_section(groups, top_k, bool(explanations))))
        if len(groups) > 1:
            body = (
                "<p class='hp-meta'>Jaccard index |A ∩ B| / |A ∪ B| of the concepts' top-"
                f"{top_k} head sets.</p>" + jaccard_html(groups, top_k)
            )
            sections.append(
                ("overlap", "Overlap", f"<section id='overlap'><h2>Overlap between concepts"
                 f"</h2>{body}</section>")
            )  # fmt: skip
    if explanations:
        cards = "".join(f"<div class='hp-card'>{explanation_body(e)}</div>" for e in explanations)
        sections.append(
            ("explanations", "Explanations",
             "<section id='explanations'><h2>Heads explained: SOMP tokens and the logit lens"
             f"</h2>{cards}</section>")
        )  # fmt: skip
    if by_kind[STEERING]:
        cards = "".join(f"<div class='hp-card'>{steering_body(r)}</div>" for r in by_kind[STEERING])
        sections.append(
            ("steering", "Steering",
             f"<section id='steering'><h2>Steering examples</h2>{cards}</section>")
        )  # fmt: skip
    if by_kind[EXPERIMENT]:
        cards = "".join(
            f"<div class='hp-card'>{experiment_body(r)}</div>" for r in by_kind[EXPERIMENT]
        )
        sections.append(
            ("experiments", "Experiments",
             "<section id='experiments'><h2>Experiments: selected heads against matched random "
             f"controls</h2>{cards}</section>")
        )  # fmt: skip
    nav = "".join(f"<a href='#{anchor}'>{_e(name)}</a>" for anchor, name, _ in sections)
    summary = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    data = {
        "groups": [_group_data(g, top_k, texts.get(g.primary.fingerprint, {})) for g in groups],
        "explanations": blocks,
    }
    script = ""
    if groups:
        script = (
            f"<script type='application/json' id='hp-data'>{_script_json(data)}</script>"
            f"<script>{asset('report.js')}</script>"
        )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{asset('report.css')}{asset('page.css')}</style>"
        f"</head><body class='hp'><header><h1>{_e(title)}</h1>"
        f"<p class='hp-meta'>headpursuit {_e(__version__)} · model {_e(', '.join(models))} · "
        f"{_e(summary)}</p><nav>{nav}</nav></header>"
        + "".join(body for _, _, body in sections)
        + script
        + "</body></html>"
    )


__all__ = [
    "SteeringEffect",
    "activations_html",
    "build_page",
    "experiment_html",
    "explanation_html",
    "ranking_html",
    "steering_effect",
    "steering_html",
]
