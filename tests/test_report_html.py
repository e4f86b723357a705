"""The report without a browser: word diffs, each artifact's notebook HTML, the page, the files.

Oracles: hand-counted word alignments; head orders from an independent sort of the score
tensors; bar counts against the number of control sets built; output norms of activations
built with known norms.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.figure import Figure

import headpursuit
import report_fixtures as fx
from headpursuit import Activations, Head, InputError
from headpursuit.io import JsonArtifact, html_renderers, register_html
from headpursuit.ranking.explain import Explanation, HeadExplanation
from headpursuit.report import (
    build_report,
    changed_fraction,
    diff_html,
    report_figures,
    word_diff,
    write_report,
)
from headpursuit.report.svg import nice_ticks

# --- word diff ----------------------------------------------------------------------------


def changed(pieces) -> list[str]:
    return [p.text.strip() for p in pieces if p.changed]


def test_a_replaced_word_is_marked_on_both_sides():
    old, new = word_diff("The capital of France is Paris.", "The capital of France is London.")
    assert changed(old) == ["Paris"] and changed(new) == ["London"]
    # 7 words and marks each side, 6 shared: 1 - 2 * 6 / 14.
    assert changed_fraction(
        "The capital of France is Paris.", "The capital of France is London."
    ) == pytest.approx(1 / 7)


def test_insertions_deletions_and_whitespace():
    old, new = word_diff("a b c", "a x b c")
    assert changed(old) == [] and changed(new) == ["x"]
    assert changed_fraction("a b c", "a x b c") == pytest.approx(1 - 6 / 7)
    old, new = word_diff("one two three", "one three")
    assert changed(old) == ["two"] and changed(new) == []
    assert changed(word_diff("a  b\n", "a b")[1]) == []  # spacing alone is no change
    assert changed_fraction("a  b\n", "a b") == 0.0
    assert changed_fraction("", "") == 0.0 and changed_fraction("", "a b") == 1.0
    assert changed_fraction("same text.", "same text.") == 0.0


@given(st.text(), st.text())
def test_pieces_join_back_to_the_texts(before, after):
    old, new = word_diff(before, after)
    assert "".join(p.text for p in old) == before
    assert "".join(p.text for p in new) == after
    assert 0.0 <= changed_fraction(before, after) <= 1.0


def test_diff_html_escapes_and_keeps_spaces_outside_marks():
    before, after = diff_html("x <b> y", "x <i> y")  # words: x, <, b|i, >, y
    assert before == 'x &lt;<mark class="hp-del">b</mark>&gt; y'
    assert after == 'x &lt;<mark class="hp-ins">i</mark>&gt; y'
    assert diff_html("a b", "a c")[1] == 'a <mark class="hp-ins">c</mark>'


# --- notebook HTML ------------------------------------------------------------------------


def oracle_order(scores: torch.Tensor, layers: tuple[int, int] | None = None) -> list[Head]:
    """Heads by descending score (ties: layer, head), by a stable sort of the flat tensor."""
    n_layers, n_heads = scores.shape
    first, last = layers or (0, n_layers - 1)
    flat = scores.flatten()
    order = torch.sort(-flat, stable=True).indices.tolist()
    heads = [Head(i // n_heads, i % n_heads) for i in order]
    return [h for h in heads if first <= h.layer <= last]


def table_heads(text: str) -> list[str]:
    return re.findall(r"<td>(L\d+H\d+)</td>", text)


def test_every_artifact_kind_has_a_renderer():
    kinds = {cls.kind for cls in headpursuit.io.artifact_kinds().values()}
    assert kinds <= set(html_renderers())
    assert "headpursuit.experiment" in html_renderers()  # registered by kind, before the class


def test_ranking_html_shows_every_head_and_the_top_ones():
    ranking = fx.ranking("colors", 0)
    text = ranking._repr_html_()
    assert text.count("class='hp-cell'") == fx.N_LAYERS * fx.N_HEADS
    assert table_heads(text) == [str(h) for h in oracle_order(ranking.scores)[:10]]
    outlines = re.search(r"<g class='hp-outlines'.*?</g>", text).group(0)
    assert outlines.count("<rect") == 10
    assert "<script" not in text and " id=" not in text


def test_ranking_html_respects_the_layer_window():
    ranking = fx.ranking("colors", 0, layers=(10, 20))
    text = ranking._repr_html_()
    assert text.count("opacity='0.35'") == fx.N_LAYERS * fx.N_HEADS - 11 * fx.N_HEADS
    expected = oracle_order(ranking.scores, (10, 20))[:10]
    assert table_heads(text) == [str(h) for h in expected]


def test_explanation_html_escapes_tokens_and_draws_each_step():
    source = fx.ranking("colors", 0)
    explanation = fx.explanation(source, k=2, extra_token="<b>&")
    text = explanation._repr_html_()
    assert "&lt;b&gt;&amp;" in text and "<b>&" not in text
    assert text.count("<circle") == sum(len(item.evr) for item in explanation.heads)
    for item in explanation.heads:
        assert str(item.head) in text
        assert all(f"<span class='hp-tok'>{t}</span>" in text for t in item.lens_tokens)


def test_steering_html_marks_the_changed_words():
    run = fx.steering(fx.ranking("countries", 1))
    text = run._repr_html_()
    assert '<mark class="hp-del">Paris</mark>' in text
    assert '<mark class="hp-ins">London</mark>' in text
    assert text.count('class="hp-ins"') == 1  # the control's output is unchanged
    # steered: 1/7 of the words changed; the one control: none; p = (1 + 0) / (1 + 1).
    assert "steered vs 1 control set(s): p = 0.500" in text


def test_steering_html_with_many_controls_folds_the_extra_columns():
    run = fx.steering(fx.ranking("colors", 0), n_controls=5)
    text = run._repr_html_()
    assert "<th>control 3</th>" in text and "<th>control 4</th>" not in text
    assert "10 more control generations" not in text and "2 more control generations" in text


def test_experiment_html_draws_every_control_set():
    result = fx.experiment(fx.ranking("colors", 0), n_controls=20)
    text = result._repr_html_()
    panels = re.findall(r"<svg class='hp-hist'.*?</svg>", text)
    assert len(panels) == len(result.settings()) * len(result.sets) == 6
    for panel in panels:
        counts = [int(n) for n in re.findall(r"<title>(\d+) control set\(s\) in", panel)]
        assert sum(counts) == 20
    # The selected heads fall below all 20 controls on the target set: p = 1 / 21.
    assert text.count("colors (target): p = 0.048") == 2
    assert "<td class='hp-yes'>yes</td>" in text


def test_activations_html_shows_each_heads_norm():
    pooled = torch.zeros(3, 2, 4, 5)
    for layer in range(2):
        for head in range(4):
            pooled[:, layer, head, 0] = 10 * layer + head  # norm = 10 * layer + head
    acts = Activations(pooled, "toy", "f" * 16, "mean", 8, ["<p>one", "two", "three"])
    text = acts._repr_html_()
    assert text.count("class='hp-cell'") == 8
    assert "<title>L1H2: 12</title>" in text and "<title>L0H3: 3</title>" in text
    assert "&lt;p&gt;one" in text


def test_unregistered_kinds_fall_back_to_the_plain_repr():
    class Other(JsonArtifact):
        kind = "someone.else"

    assert Other()._repr_html_() is None


def test_register_html_replaces_and_checks():
    before = html_renderers()["headpursuit.steering"]
    try:
        register_html("headpursuit.steering", lambda run: "<p>mine</p>")
        assert fx.steering(fx.ranking("colors", 0))._repr_html_() == "<p>mine</p>"
    finally:
        register_html("headpursuit.steering", before)
    with pytest.raises(InputError, match="artifact kind"):
        register_html("", before)
    with pytest.raises(InputError, match="must be a function"):
        register_html("x", "not callable")


# --- the page -----------------------------------------------------------------------------


def page_data(text: str) -> dict:
    found = re.search(r"<script type='application/json' id='hp-data'>(.*?)</script>", text)
    return json.loads(found.group(1))


def test_page_data_ranks_heads_like_an_independent_sort():
    colors, other = fx.ranking("colors", 0), fx.ranking("colors", 5, criterion="logit_lens")
    text = build_report([colors, other, fx.ranking("countries", 1)], top_k=4)
    data = page_data(text)
    assert [g["label"] for g in data["groups"]] == ["colors", "countries"]
    quantities = {q["label"]: q for q in data["groups"][0]["quantities"]}
    assert list(quantities) == [
        "specificity score", "logit_lens score", "concept EVR (3 atoms)", "random_evr"
    ]  # fmt: skip
    for label, tensor in (("specificity score", colors.scores), ("logit_lens score", other.scores),
                          ("random_evr", colors.tables["random_evr"])):  # fmt: skip
        order = oracle_order(tensor)
        ranks = quantities[label]["ranks"]
        assert [ranks[h.layer * fx.N_HEADS + h.head] for h in order] == list(range(1, 271))
        assert quantities[label]["top"] == [h.layer * fx.N_HEADS + h.head for h in order[:4]]


def test_page_is_self_contained_and_script_safe():
    source = fx.ranking("colors", 0)
    nasty = "</script><b>x"
    text = build_report([source, fx.explanation(source, extra_token=nasty)])
    assert text.count("<script") == 2 and text.count("</script>") == 2
    assert not re.search(r"""(src|href)\s*=\s*['"]?\s*(https?:)?//""", text)
    assert "@import" not in text and "url(" not in text
    blocks = page_data(text)["explanations"]
    assert any("&lt;/script&gt;&lt;b&gt;x" in block for block in blocks.values())


def test_page_sections_follow_the_artifacts_given():
    source = fx.ranking("colors", 0)
    only_explained = build_report([fx.explanation(source)])
    assert "Heads explained" in only_explained and "Heads per concept" not in only_explained
    assert "<script" not in only_explained
    only_experiment = build_report([fx.experiment(source)])
    assert "id='experiments'" in only_experiment and "id='steering'" not in only_experiment
    everything = build_report(fx.demo_artifacts())
    for section in ("heads", "overlap", "explanations", "steering", "experiments"):
        assert f"<section id='{section}'>" in everything


def test_page_refuses_what_it_cannot_draw():
    with pytest.raises(InputError, match="No artifacts"):
        build_report([])
    acts = Activations(torch.ones(2, 1, 1, 2), "toy", "f" * 16, "mean", 2)
    with pytest.raises(InputError, match=r"headpursuit\.activations"):
        build_report([acts])
    with pytest.raises(InputError, match="top_k"):
        build_report([fx.ranking("colors", 0)], top_k=0)


def test_write_report_writes_html_and_figures(tmp_path):
    source = fx.ranking("colors", 0, shape=(4, 3))
    explanation = Explanation(
        [HeadExplanation(Head(1, 2), [5, 6], ["red", "blue"], [0.2, 0.3], [7], ["x"], [3])],
        n_atoms=2, n_samples=4, model_id="toy-135M", fingerprint=fx.FINGERPRINT,
    )  # fmt: skip
    written = write_report([source, explanation], tmp_path / "r.html", top_k=3)
    assert [p.name for p in written] == [
        "r.html",
        "r_heads_0_colors_specificity.svg",
        "r_heads_0_colors_specificity.png",
        "r_explanation_0.svg",
        "r_explanation_0.png",
    ]
    assert written[1].read_text().lstrip().startswith("<?xml")
    assert written[2].read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in write_report([source], tmp_path / "s.html", formats=())] == ["s.html"]
    with pytest.raises(InputError, match="'gif'"):
        write_report([source], tmp_path / "t.html", formats=("gif",))
    assert not (tmp_path / "t.html").exists()


def test_report_figures_cover_every_artifact():
    artifacts = []
    for seed, concept in enumerate(("colors", "countries")):
        source = fx.ranking(concept, seed, shape=(6, 4))
        artifacts += [source, fx.explanation(source, k=2), fx.steering(source)]
        artifacts.append(fx.experiment(source, seed=seed))
    figures = report_figures(artifacts, top_k=3)
    assert sorted(figures) == sorted([
        "heads_0_colors_specificity", "heads_1_countries_specificity", "jaccard",
        "explanation_0", "explanation_1", "steering_0_colors", "steering_1_countries",
        "experiment_0_qa_colors", "experiment_1_qa_countries",
    ])  # fmt: skip
    assert all(isinstance(f, Figure) for f in figures.values())
    assert len(figures["experiment_0_qa_colors"].axes) == 2 * 3  # (k, alpha) x sets


def test_nice_ticks_are_round_and_inside():
    assert nice_ticks(0.08, 1.07) == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(-0.01, 0.15) == [0.0, 0.05, 0.1, 0.15]
    assert nice_ticks(2.0, 2.0) == [2.0]


def test_report_command_writes_the_formats_asked(tmp_path):
    from typer.testing import CliRunner

    from headpursuit.cli import app

    source = fx.ranking("colors", 0, shape=(4, 3))
    files = [source.save(tmp_path / "colors.json"), fx.steering(source).save(tmp_path / "s.json")]
    out = tmp_path / "out" / "report.html"
    runner = CliRunner()
    result = runner.invoke(app, ["report", *map(str, files), "--out", str(out),
                                 "--figure-format", "svg", "--top-k", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "report.html", "report_heads_0_colors_specificity.svg", "report_steering_0_colors.svg"
    ]  # fmt: skip
    assert "(+ 2 figure files beside it)" in result.stdout
    result = runner.invoke(app, ["report", str(files[0]), "--out", str(tmp_path / "h.html"),
                                 "--no-figures"])  # fmt: skip
    assert result.exit_code == 0 and "(+ 0 figure files" in result.stdout
    result = runner.invoke(app, ["report", str(files[0]), "--out", str(tmp_path / "g.html"),
                                 "--figure-format", "gif"])  # fmt: skip
    assert result.exit_code == 2 and "'gif' is not one of svg, png, pdf" in result.stderr
    assert not (tmp_path / "g.html").exists()
