"""The experiment engine: arms, matched controls, statistics and verdicts, round trips."""

from __future__ import annotations

import string
from collections import Counter

import numpy as np
import pytest

from conftest import random_prompts, tiny_model
from headpursuit import AttentionSites, Head, capture, rank_heads
from headpursuit.evaluation.experiment import ArmResult, ExperimentResult, ItemSet, run_experiment


def _planted(nontarget_selected: float) -> ExperimentResult:
    """Target: 10 items in 5 entities; the selected heads keep 3 of 10 right; 20 controls
    keep 8 to 10. Non-target: 10 items; the selected heads keep ``nontarget_selected``."""
    clusters = tuple(f"e{i // 2}" for i in range(10))
    sets = [ItemSet("target", "target", clusters), ItemSet("other", "nontarget", clusters)]
    ones = [1.0] * 10
    baseline = ArmResult("baseline", 0, 1.0, [], {"target": {"correct": 1.0}, "other": {"correct": 1.0}},
                         {"target": {"correct": ones}, "other": {"correct": ones}})  # fmt: skip
    selected_target = [1.0, 1.0, 1.0] + [0.0] * 7
    n_other = round(nontarget_selected * 10)
    selected_other = [1.0] * n_other + [0.0] * (10 - n_other)
    arms = [
        baseline,
        ArmResult("selected", 2, -1.0, [Head(1, 0), Head(2, 1)],
                  {"target": {"correct": 0.3}, "other": {"correct": nontarget_selected}},
                  {"target": {"correct": selected_target}, "other": {"correct": selected_other}}),
    ]  # fmt: skip
    for s in range(20):
        value = 0.8 + 0.01 * s  # 0.80 .. 0.99
        arms.append(
            ArmResult("control", 2, -1.0, [Head(1, 1), Head(2, 2)],
                      {"target": {"correct": value}, "other": {"correct": value}}, seed=s)
        )  # fmt: skip
    return ExperimentResult("qa", "target", "toy", "f" * 16, "correct", "decrease", sets, arms)


def test_summary_and_verdict_on_a_planted_effect():
    result = _planted(nontarget_selected=0.9)
    rows = {(r["set"], r["arm"]): r for r in result.summary()}
    target = rows[("target", "selected")]
    assert target["value"] == pytest.approx(0.3)
    assert target["low"] <= 0.3 <= target["high"] < 0.8
    assert target["p"] == pytest.approx(1 / 21)  # no control at or below 0.3
    assert target["controls_mean"] == pytest.approx(np.mean([0.8 + 0.01 * s for s in range(20)]))
    other = rows[("other", "selected")]
    # 0.9 lies inside the controls: 11 of 20 are at or below it.
    assert other["p"] == pytest.approx((1 + 11) / 21)
    verdict = result.verdicts()[0]
    assert verdict["significant"] and verdict["specific"]


def test_damage_beyond_the_controls_on_a_nontarget_is_not_specific():
    verdict = _planted(nontarget_selected=0.5).verdicts()[0]
    assert verdict["significant"] and not verdict["specific"]


def test_experiment_round_trips(tmp_path):
    result = _planted(nontarget_selected=0.9)
    back = ExperimentResult.load(result.save(tmp_path / "qa.json"))
    assert back.summary() == result.summary()
    assert [a.heads for a in back.arms] == [a.heads for a in result.arms]
    frame = back.to_frame()
    assert set(frame["arm"]) == {"baseline", "selected", "control"}
    assert frame[frame.arm == "selected"]["normalised"].tolist() == pytest.approx([0.3, 0.9])


def test_run_experiment_plans_matched_controls_for_every_k_and_alpha():
    loaded = tiny_model("llama_gqa")
    sites = AttentionSites(loaded.model)
    acts = capture(loaded, random_prompts(12), progress=False)
    ranking = rank_heads(acts, sites, [5, 9, 40, 41], criterion="evr", n_atoms=2)
    lens = rank_heads(acts, sites, [5, 9, 40, 41], criterion="logit_lens")
    inputs = loaded.tokenizer(random_prompts(4, seed=9), padding=True, return_tensors="pt")
    base = loaded.model(**inputs).logits.detach()
    clusters = ("a", "a", "b", "c")

    def evaluate():
        logits = loaded.model(**inputs).logits.detach()
        same = (logits.argmax(-1) == base.argmax(-1)).float().mean(-1).numpy()
        return {"toy": {"correct": same, "shift": (logits - base).abs().mean((-1, -2)).numpy()}}

    result = run_experiment(
        loaded, task="toy", concept="toy", sets=[ItemSet("toy", "target", clusters)],
        evaluate=evaluate, primary="correct", selected=ranking, others=[lens],
        ks=[2, 3], alphas=[-1.0, 0.0], n_controls=20, seed=5,
    )  # fmt: skip
    assert result.arms[0].arm == "baseline" and result.arms[0].means["toy"]["shift"] == 0.0
    assert result.settings() == [(2, -1.0), (3, -1.0), (2, 0.0), (3, 0.0)]
    for k, alpha in result.settings():
        arms = [a for a in result.arms if (a.k, a.alpha) == (k, alpha)]
        selected = next(a for a in arms if a.arm == "selected")
        assert selected.heads == ranking.top(k)
        assert next(a for a in arms if a.arm == "logit_lens").heads == lens.top(k)
        controls = [a for a in arms if a.arm == "control"]
        assert [c.seed for c in controls] == list(range(5, 25))
        for control in controls:
            assert not set(control.heads) & set(selected.heads)
            if not control.borrowed:
                assert Counter(h.layer for h in control.heads) == Counter(
                    h.layer for h in selected.heads
                )
            assert control.items == {}  # controls keep means only
        assert len({tuple(c.heads) for c in controls}) > 1
    # The same control draw for both alphas: the contrast is the scale, not the heads.
    by_seed = {}
    for arm in result.arms:
        if arm.arm == "control" and arm.k == 2:
            by_seed.setdefault(arm.seed, []).append(arm.heads)
    assert all(a == b for a, b in by_seed.values())
    assert result.summary()[0]["n_controls"] == 20


def test_verdicts_without_a_nontarget_set_test_significance_only():
    planted = _planted(nontarget_selected=0.9)
    only_target = ExperimentResult(
        "wordfreq", "target", "toy", "f" * 16, "correct", "decrease", planted.sets[:1],
        [ArmResult(a.arm, a.k, a.alpha, a.heads,
                   {"target": a.means["target"]},
                   {"target": a.items["target"]} if a.items else {}, a.seed)
         for a in planted.arms],
    )  # fmt: skip
    verdict = only_target.verdicts()[0]
    assert verdict["significant"] and verdict["target_p"] == pytest.approx(1 / 21)
    assert verdict["specific"] is None and np.isnan(verdict["nontarget_p"])
    # A setting the selected heads do not beat: not significant, still not judged specific.
    weak = _planted(nontarget_selected=0.9)
    weak.arms[1].items["target"]["correct"] = [1.0] * 9 + [0.0]
    weak.arms[1].means["target"]["correct"] = 0.9
    weak.sets = weak.sets[:1]
    verdict = weak.verdicts()[0]
    assert not verdict["significant"] and verdict["specific"] is None


def test_control_values_are_the_controls_normalised_accuracies():
    result = _planted(nontarget_selected=0.9)
    values = result.control_values(2, -1.0, "target")
    assert values == pytest.approx([0.8 + 0.01 * s for s in range(20)])
    assert result.control_values(3, -1.0, "target") == []  # no arm at k = 3


def _script(name: str = "vlm_experiments"):
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "scripts"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # vlm_experiments imports its sibling vlm_results
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_classify_bar_counts_the_controls_that_keep_accuracy():
    script = _script("vlm_results")
    result = _planted(nontarget_selected=0.9)
    (row,) = script.classify_bar(result)
    assert row["selected"] == pytest.approx(0.3)
    assert row["controls_kept"] == 1.0 and row["met"]
    # Two of the 20 control sets fall below 0.8: 90 % keep it, short of 95 %.
    for arm in [a for a in result.arms if a.arm == "control"][:2]:
        arm.means["target"]["correct"] = 0.7
    (row,) = script.classify_bar(result)
    assert row["controls_kept"] == pytest.approx(18 / 20) and not row["met"]


def test_jaccard_bar_compares_means_and_names_the_most_overlapping_other_pair(tmp_path):
    import json

    script = _script("vlm_results")

    def row(a: str, b: str, jaccard: float, similar: bool) -> dict:
        return {"k": 3, "a": a, "b": b, "jaccard": jaccard, "null_mean": 0.01, "p": 0.001,
                "similar": similar}  # fmt: skip

    rows = [
        row("digits", "svhn_like", 0.5, True),
        row("eurosat_like", "resisc_like", 0.5, True),
        row("fashion", "dtd_like", 1.0, False),
        *(row("digits", other, 0.0, False) for other in ("fashion", "gtsrb_like", "dtd_like")),
    ]
    (tmp_path / "jaccard.json").write_text(json.dumps({"rows": rows}))
    (line,) = [x for x in script._bar_section(tmp_path) if x.startswith("- Jaccard")]
    # Means 0.50 against 0.25: met, but a dissimilar pair overlaps fully and is named.
    assert "vs other pairs 0.25 (highest 1.00, fashion/dtd_like)" in line
    assert line.endswith("met on the means")
    rows[2]["jaccard"] = rows[3]["jaccard"] = 1.0  # now the other pairs' mean is 0.50
    (tmp_path / "jaccard.json").write_text(json.dumps({"rows": rows}))
    (line,) = [x for x in script._bar_section(tmp_path) if x.startswith("- Jaccard")]
    assert line.endswith("not met")


@pytest.mark.parametrize(
    ("option", "value", "named", "hint"),
    [
        ("--captions", "suppress,amplfy", "amplfy", "choose from"),
        ("--only", "classify,captions", "captions", "choose from"),
        ("--dev-ks", "1,x", "1,x", "expected positive"),
        ("--percents", "0,1", "0,1", "expected positive"),
        ("--jobs", "0", "0", "at least 1"),
        ("--datasets", "digits,digitz", "digitz", "choose one of"),
    ],
)
def test_vlm_script_refuses_bad_options_before_any_work(
    option, value, named, hint, tmp_path, monkeypatch, capsys
):
    script = _script()
    monkeypatch.setattr("sys.argv", ["vlm_experiments.py", "--out", str(tmp_path), option, value])
    with pytest.raises(SystemExit) as stop:
        script.main()
    assert stop.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert option in message and named in message and hint in message
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    ("option", "value", "hint"),
    [
        ("--align-weight", "-1", "must be a number >= 0"),
        ("--align-weight", "nan", "must be a number >= 0"),
        ("--stage-2-weight", "fashon=2", "unknown task"),
        ("--stage-2-weight", "fashion=x", "must be a number"),
        ("--stage-2-weight", "fashion=0", "must be positive"),
    ],
)
def test_training_script_refuses_bad_options_before_any_work(
    option, value, hint, tmp_path, monkeypatch, capsys
):
    script = _script("train_tiny_vlm")
    out = tmp_path / "weights"
    monkeypatch.setattr("sys.argv", ["train_tiny_vlm.py", "--out", str(out), option, value])
    with pytest.raises(SystemExit) as stop:
        script.main()
    assert stop.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert option in message and hint in message
    assert not out.exists()  # refused before the model is built or anything is written


def test_caption_dev_rule_takes_the_best_retention_among_settings_that_cut_colours():
    script = _script()

    def row(criterion, k, colour, retention):
        return {
            "pooling": "image",
            "criterion": criterion,
            "k": k,
            "colour": colour,
            "retention": retention,
        }

    rows = [
        row("a", 1, 0.9, 0.99),  # keeps the caption but not below the colour cut
        row("a", 3, 0.30, 0.60),  # at the cut: eligible
        row("b", 5, 0.10, 0.75),  # the best retention among the eligible
        row("b", 4, 0.20, 0.75),  # ... tied: the smaller k wins
        row("c", 8, 0.00, 0.05),
    ]
    assert script.choose_caption_setting(rows) == rows[3]
    assert script.choose_caption_setting(rows[:1]) is None
    assert script.choose_caption_setting([row("a", 2, 0.31, 1.0), rows[1]]) == rows[1]


def test_dictionary_check_splits_whole_class_words_from_fragments(smollm):
    """Hand-built: of " bag", "Sh", " boot" and "T", the whole class words are " bag" and
    " boot" (from "Bag" and the word "boot" of "Ankle boot"); "Sh" and "T" are pieces."""
    script = _script("vlm_dictionary_check")
    tokenizer = smollm.tokenizer

    def one(text: str) -> int:
        (token,) = tokenizer(text, add_special_tokens=False).input_ids
        return token

    ids = [one(" bag"), one("Sh"), one(" boot"), one("T")]
    whole, fragments = script.split_dictionary(tokenizer, ids, ["Bag", "Shirt", "Ankle boot"])
    assert whole == [one(" bag"), one(" boot")]
    assert fragments == [one("Sh"), one("T")]
    letters = script.unused_letters(tokenizer, {"A", "B", "ank"})
    expected = {s for c in string.ascii_uppercase[2:] for s in (c, " " + c)}
    assert {tokenizer.decode([i]) for i in letters} == expected


def test_results_md_vlm_block_is_what_render_writes_from_the_shipped_artifacts():
    script = _script("vlm_results")
    block = script.current_block()
    assert block, "docs/results.md has no VLM block"
    expected = f"{script.BEGIN}\n{script.render(script.ROOT / 'results' / 'vlm')}{script.END}"
    assert block == expected, "rerun: .venv/bin/python scripts/vlm_experiments.py --render"


def test_results_md_is_what_qa_results_render_only_writes(tmp_path, monkeypatch):
    script = _script("qa_results")
    shipped = script.DOC.read_text()
    doc = tmp_path / "results.md"
    doc.write_text(shipped)  # main keeps the VLM block of the file it rewrites
    monkeypatch.setattr(script, "DOC", doc)
    monkeypatch.setattr("sys.argv", ["qa_results.py", "--render-only"])
    script.main()
    assert doc.read_text() == shipped, "rerun: .venv/bin/python scripts/qa_results.py --render-only"


def test_vlm_work_units_cover_every_part_once_and_leave_jaccard_for_last(tmp_path, monkeypatch):
    script = _script()
    monkeypatch.setattr("sys.argv", ["vlm_experiments.py", "--out", str(tmp_path)])
    parser_args = {}

    def capture_run(args):
        parser_args["args"] = args

    monkeypatch.setattr(script, "run", capture_run)
    monkeypatch.setattr(script, "render", lambda out: "")
    script.main()
    args = parser_args["args"]
    args.datasets, args.jobs = "digits,fashion,dtd_like", 3
    units = script.work_units(args)
    got = sorted((u.only, u.datasets) for u in units)
    assert got == sorted(
        [
            ("caption,caption-dev", "digits,fashion,dtd_like"),
            ("classify", "digits"),
            ("classify", "fashion"),
            ("classify", "dtd_like"),
            ("heldout", "digits,fashion,dtd_like"),  # the held-out pass scores every dataset
        ]
    )
    assert {u.jobs for u in units} == {1} and all(u.out == args.out for u in units)
    args.only = "classify,jaccard"
    assert sorted((u.only, u.datasets) for u in script.work_units(args)) == [
        ("classify", "digits"),
        ("classify", "dtd_like"),
        ("classify", "fashion"),
    ]
