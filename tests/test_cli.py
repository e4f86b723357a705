"""The `headpursuit` CLI end to end on the real embedded SmolLM2, its error handling, and the
notebook-facing API of explain/report (DataFrames, figures)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas
import pytest
import torch
from matplotlib.figure import Figure
from typer.testing import CliRunner

from headpursuit import Activations, Head, HeadRanking, InputError, read_prompts
from headpursuit.cli import app
from headpursuit.evaluation.experiment import ExperimentResult
from headpursuit.models import loading
from headpursuit.protocol import DEFAULT_ALPHA
from headpursuit.ranking.explain import Explanation, HeadExplanation
from headpursuit.report import (
    build_report,
    evr_heatmap,
    figure_png,
    jaccard_heatmap,
    jaccard_table,
    report_figures,
)
from headpursuit.steering.comparison import SteeringRun

PROMPTS = [
    "What colour is the sky on a clear day?",
    "What colour are ripe bananas?",
    "Name a colour of the rainbow.",
    "What is the capital of France?",
    "What is the capital of Japan?",
    "Which country is Berlin in?",
    "How many legs does a spider have?",
    "What do bees make?",
]

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, *, code: int = 2, contains: str = "") -> str:
    """Exit status != 0, exactly one line on stderr starting with 'Error:', no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert contains.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.fixture
def fast_load(monkeypatch, smollm):
    """Reuse the session's loaded SmolLM2 instead of loading it again per command."""
    monkeypatch.setattr(loading, "load_model", lambda *args, **kwargs: smollm)
    return smollm


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, smollm):
    """capture -> rank (two concepts) -> explain -> steer, through the CLI, real model load."""
    root = tmp_path_factory.mktemp("cli")
    prompts = root / "prompts.txt"
    prompts.write_text("# a comment\n" + "\n".join(PROMPTS) + "\n\n")
    acts = root / "acts.safetensors"
    results = {"capture": invoke("capture", "--prompts", prompts, "--out", acts, "--batch-size", 4)}
    # The capture above loaded the model through the CLI; the rest reuse the session's copy.
    patch = pytest.MonkeyPatch()
    patch.setattr(loading, "load_model", lambda *args, **kwargs: smollm)
    results |= {
        "rank_colors": invoke(
            "rank",
            acts,
            "colors",
            "--criterion",
            "evr",
            "--layers",
            "1:29",
            "--out",
            root / "colors.json",
            "--csv",
            root / "colors.csv",
        ),
        "rank_countries": invoke("rank", acts, "countries", "--out", root / "countries.json"),
    }
    results["explain"] = invoke(
        "explain", acts, "--ranking", root / "colors.json", "--top-k", 2,
        "--head", "L29H7", "--n-atoms", 4, "--out", root / "explanation.json",
    )  # fmt: skip
    results["steer"] = invoke(
        "steer", "--ranking", root / "countries.json", "--top-k", 2, "--alpha", "1.0",
        "--prompt", "What is the capital of France?", "--max-new-tokens", 6,
        "--controls", 2, "--threads", 1, "--out", root / "steering.json",
    )  # fmt: skip
    results["steer_flip"] = invoke(
        "steer", "--head", "L23H4", "--head", "L23H2", "--prompt", "What is the capital of Italy?",
        "--max-new-tokens", 6, "--threads", 1, "--out", root / "steering_flip.json",
    )  # fmt: skip
    patch.undo()
    for name, result in results.items():
        assert result.exit_code == 0, (name, result.output, result.exception)
    return root, results


@pytest.mark.slow
def test_capture_writes_activations(pipeline, smollm):
    root, results = pipeline
    acts = Activations.load(root / "acts.safetensors")
    assert acts.prompts == PROMPTS
    assert acts.pooled.shape == (len(PROMPTS), 30, 9, 64)
    assert acts.fingerprint == smollm.fingerprint
    assert torch.isfinite(acts.pooled).all() and acts.pooled.abs().sum() > 0
    assert "Wrote" in results["capture"].stdout


@pytest.mark.slow
def test_rank_writes_ranking_and_respects_the_layer_window(pipeline):
    root, results = pipeline
    colors = HeadRanking.load(root / "colors.json")
    assert colors.concept == "colors" and colors.criterion == "evr" and colors.layers == (1, 29)
    assert all(head.layer >= 1 for head in colors.top(20))
    assert torch.equal(colors.scores, colors.evr)  # raw EVR: the score is the EVR
    best_outside = float(colors.evr[0].max())
    assert len(colors.order()) == 29 * 9
    table = pandas.read_csv(root / "colors.csv")
    assert list(table["head"][:5]) == [str(h) for h in colors.top(5)]
    assert best_outside >= 0
    countries = HeadRanking.load(root / "countries.json")
    assert countries.criterion == "specificity" and countries.layers is None
    random_evr = countries.tables["random_evr"]
    assert torch.allclose(countries.scores, countries.evr - random_evr)
    out = results["rank_colors"].stdout
    assert "Concept('colors'" in out and str(colors.top(1)[0]) in out


@pytest.mark.slow
def test_explain_lists_somp_and_logit_lens_tokens(pipeline):
    root, results = pipeline
    data = json.loads((root / "explanation.json").read_text())
    assert data["kind"] == "headpursuit.explanation"
    explanation = Explanation.load(root / "explanation.json")
    ranked = HeadRanking.load(root / "colors.json").top(2)
    expected = list(dict.fromkeys([Head(29, 7), *ranked]))
    assert [item.head for item in explanation.heads] == expected
    for item in explanation.heads:
        assert len(item.somp_ids) == len(item.somp_tokens) == len(item.evr) == 4
        assert len(set(item.somp_ids)) == 4
        assert all(b >= a - 1e-9 for a, b in zip(item.evr, item.evr[1:], strict=False))
        assert 0 < item.evr[-1] <= 1
        assert len(item.lens_tokens) == 5 and sum(item.lens_counts) > 0
    frame = explanation.to_frame()
    assert list(frame["head"]) == [str(h) for h in expected]
    assert "somp_tokens" in results["explain"].stdout


@pytest.mark.slow
def test_steer_alpha_one_is_identity_and_controls_are_matched(pipeline):
    root, _ = pipeline
    run = SteeringRun.load(root / "steering.json")
    assert run.alpha == 1.0 and len(run.controls) == 2
    assert run.steered == run.unmodified  # α = 1 leaves the model untouched
    assert all(outputs == run.unmodified for outputs in run.control_outputs)
    for control in run.controls:
        assert sorted(h.layer for h in control) == sorted(h.layer for h in run.heads)
        assert not set(control) & set(run.heads)
    flip = SteeringRun.load(root / "steering_flip.json")
    assert flip.alpha == -1.0 and flip.heads == [Head(23, 4), Head(23, 2)]
    assert flip.unmodified[0] and flip.steered[0] and flip.control_outputs[0][0]


@pytest.mark.slow
def test_report_is_self_contained(pipeline):
    root, _ = pipeline
    out = root / "report" / "report.html"
    artifacts = ["colors.json", "countries.json", "explanation.json", "steering_flip.json"]
    result = invoke("report", *[root / a for a in artifacts], "--out", out, "--top-k", 5)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?\s*(https?:)?//""", text)  # nothing fetched
    assert "Steering examples" in text and "Heads explained" in text and "L29H7" in text
    stems = ["heads_0_colors_evr", "heads_1_countries_specificity", "jaccard",
             "explanation_0", "steering_0_heads"]  # fmt: skip
    for suffix in ("png", "svg"):
        found = sorted(p.name for p in out.parent.glob(f"*.{suffix}"))
        assert found == sorted(f"report_{stem}.{suffix}" for stem in stems)


@pytest.mark.slow
def test_capture_reads_jsonl_column(tmp_path, fast_load):
    source = tmp_path / "prompts.jsonl"
    source.write_text(
        "\n".join(json.dumps({"text": p, "id": i}) for i, p in enumerate(PROMPTS[:3]))
    )
    out = tmp_path / "acts.safetensors"
    result = invoke("capture", "--prompts", source, "--column", "text", "--out", out, "--no-chat")
    assert result.exit_code == 0, result.output
    assert Activations.load(out).prompts == PROMPTS[:3]


def test_read_prompts_needs_column_for_jsonl(tmp_path):
    source = tmp_path / "prompts.jsonl"
    source.write_text(json.dumps({"text": "hi"}))
    with pytest.raises(InputError, match="--column"):
        read_prompts(str(source))
    assert read_prompts(str(source), column="text") == ["hi"]


# --- errors --------------------------------------------------------------------------


@pytest.mark.slow
def test_missing_files_give_one_line_errors(tmp_path, fast_load):
    out = tmp_path / "acts.safetensors"
    result = invoke("capture", "--prompts", tmp_path / "missing.txt", "--out", out)
    assert_user_error(result, contains="missing.txt")
    assert not out.exists()
    result = invoke(
        "rank", tmp_path / "missing.safetensors", "colors", "--out", tmp_path / "r.json"
    )
    assert_user_error(result, contains="No activations file")
    result = invoke("report", tmp_path / "missing.json", "--out", tmp_path / "report.html")
    assert_user_error(result, contains="missing.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_wrong_artifact_types(pipeline, tmp_path, fast_load):
    root, _ = pipeline
    out = tmp_path / "out.json"
    result = invoke("rank", root / "colors.json", "colors", "--out", out)
    assert_user_error(result, contains="not a headpursuit activations file")
    result = invoke(
        "explain", root / "acts.safetensors", "--ranking", root / "explanation.json", "--out", out
    )
    assert_user_error(result, contains="not a headpursuit.ranking artifact")
    result = invoke("report", root / "acts.safetensors", "--out", tmp_path / "report.html")
    assert_user_error(result, contains="activations")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_unknown_concept(pipeline, tmp_path, fast_load):
    root, _ = pipeline
    out = tmp_path / "ranking.json"
    result = invoke("rank", root / "acts.safetensors", "flavours", "--out", out)
    assert_user_error(result, contains="Unknown concept 'flavours'")
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("k", "message"),
    [
        ("0", "Invalid value for '--top-k'"),
        ("262", "k must be between 1 and 261 (the heads in layers 1:29)"),
    ],
)
def test_k_out_of_range(pipeline, tmp_path, fast_load, k, message):
    root, _ = pipeline
    out = tmp_path / "explanation.json"
    result = invoke(
        "explain", root / "acts.safetensors", "--ranking", root / "colors.json", "--top-k", k,
        "--out", out,
    )  # fmt: skip
    assert_user_error(result, contains=message)
    assert not out.exists()


@pytest.mark.slow
def test_activations_from_another_model(pipeline, tmp_path, fast_load):
    root, _ = pipeline
    acts = Activations.load(root / "acts.safetensors")
    acts.fingerprint = "0123456789abcdef"
    other = acts.save(tmp_path / "other.safetensors")
    out = tmp_path / "explanation.json"
    result = invoke("explain", other, "--head", "L1H1", "--out", out)
    assert_user_error(result, contains="Capture them again")
    result = invoke("rank", other, "colors", "--out", out)
    assert_user_error(result, contains="Capture them again")
    assert not out.exists()


@pytest.mark.slow
def test_ranking_from_another_model_is_refused_by_steer(pipeline, tmp_path, fast_load):
    root, _ = pipeline
    ranking = HeadRanking.load(root / "colors.json")
    ranking.fingerprint = "0123456789abcdef"
    other = ranking.save(tmp_path / "other.json")
    out = tmp_path / "steering.json"
    result = invoke("steer", "--ranking", other, "--prompt", "Hi", "--out", out)
    assert_user_error(result, contains="not of this model")
    assert not out.exists()


def test_bad_head_name_is_a_one_line_error(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model should not be loaded")

    monkeypatch.setattr(loading, "load_model", no_model)  # head errors come before loading
    out = tmp_path / "steering.json"
    result = invoke("steer", "--prompt", "Hi", "--out", out)
    assert_user_error(result, contains="No heads given")
    result = invoke("steer", "--head", "layer3", "--prompt", "Hi", "--out", out)
    assert_user_error(result, contains="Cannot read head 'layer3'")
    assert not out.exists()


def test_ctrl_c_exits_130_without_a_file(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loading, "load_model", interrupted)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\nworld\n")
    out = tmp_path / "acts.safetensors"
    result = invoke("capture", "--prompts", prompts, "--out", out)
    line = assert_user_error(result, code=130)
    assert line.startswith("Interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt"]


def test_help_teaches_the_pipeline():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("capture", "rank", "explain", "steer", "report", "demo"):
        assert command in result.stdout
    assert "capture -> rank" in result.stdout
    rank_help = invoke("rank", "--help").stdout
    assert "--criterion" in rank_help and "--layers" in rank_help and "colors" in rank_help


# --- the notebook API (no model needed) ----------------------------------------------


def synthetic_ranking(concept: str, seed: int) -> HeadRanking:
    generator = torch.Generator().manual_seed(seed)
    evr = torch.rand(4, 3, generator=generator, dtype=torch.float64)
    support = torch.randint(0, 50, (4, 3, 2), generator=generator)
    return HeadRanking(concept, "evr", evr.clone(), evr, support, 2, "toy", "f" * 16, [1, 2])


def test_report_functions_return_figures_and_frames():
    first, second = synthetic_ranking("a", 0), synthetic_ranking("b", 1)
    assert isinstance(evr_heatmap(first, top_k=3), Figure)
    assert isinstance(jaccard_heatmap([first, second], k=3), Figure)
    table = jaccard_table([first, first, second], k=3)
    assert table.iloc[0, 1] == 1.0 and table.iloc[2, 2] == 1.0
    expected = len(set(first.top(3)) & set(second.top(3))) / len(
        set(first.top(3)) | set(second.top(3))
    )
    assert table.iloc[0, 2] == pytest.approx(expected)
    explanation = Explanation(
        [HeadExplanation(Head(1, 2), [5, 6], ["red", "blue"], [0.2, 0.3], [7], ["x"], [3])],
        n_atoms=2, n_samples=4, model_id="toy", fingerprint="f" * 16,
    )  # fmt: skip
    frame = explanation.to_frame()
    assert frame.loc[0, "somp_tokens"] == "red, blue" and frame.loc[0, "evr"] == 0.3
    text = build_report([first, second, explanation], top_k=3)
    assert "<span class='hp-tok'>red</span>" in text and "<span class='hp-tok'>blue</span>" in text
    figures = report_figures([first, second, explanation], top_k=3)
    assert list(figures) == ["heads_0_a_evr", "heads_1_b_evr", "jaccard", "explanation_0"]
    assert all(figure_png(f).startswith(b"\x89PNG") for f in figures.values())


def test_dataset_source_without_datasets_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(InputError, match="needs the `datasets` package"):
        read_prompts("someone/questions", column="text")
    with pytest.raises(InputError, match="No prompts file"):
        read_prompts(str(tmp_path / "questions.txt"))


@pytest.mark.slow
def test_demo_runs_the_whole_chain(tmp_path, fast_load):
    threads = torch.get_num_threads()
    try:
        result = invoke("demo", "--out", tmp_path, "--max-new-tokens", 6)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, (result.output, result.exception)
    names = sorted(p.name for p in tmp_path.iterdir())
    for concept in ("colors", "countries"):
        for kind in ("ranking", "explanation", "steering"):
            assert f"{kind}_{concept}.json" in names
        ranking = HeadRanking.load(tmp_path / f"ranking_{concept}.json")
        assert ranking.criterion == "specificity"
        run = SteeringRun.load(tmp_path / f"steering_{concept}.json")
        assert run.heads == ranking.top(3) and run.alpha == DEFAULT_ALPHA
    assert "report.html" in names and "activations.safetensors" in names
    assert "ranked by specificity" in result.stdout and "Report:" in result.stdout
    experiment = ExperimentResult.load(tmp_path / "experiment_countries.json")
    assert sum(a.arm == "control" for a in experiment.arms) == 20
    assert experiment.config["criterion"] == "specificity" and experiment.settings() == [
        (3, DEFAULT_ALPHA)
    ]
    assert "p = " in result.stdout and "Verdict: " in result.stdout


def test_every_command_that_loads_a_model_takes_dtype_device_and_device_map():
    import inspect

    loading_commands = []
    for command in app.registered_commands:
        source = inspect.getsource(command.callback)
        name = command.name or command.callback.__name__
        if re.search(r"\bload\(", source):  # cli.common.load: the one way commands load a model
            loading_commands.append(name)
            options = set(inspect.signature(command.callback).parameters)
            assert {"dtype", "device", "device_map"} <= options, name
    # the check above must have something to check: the chain's commands all load a model
    assert {"capture", "rank", "explain", "steer", "qa", "classify", "demo"} <= set(
        loading_commands
    )


def test_demo_says_what_its_alpha_does_to_the_heads():
    from headpursuit.cli.demo import _done_to

    assert [_done_to(a) for a in (-1.0, 0.0, 5.0, 0.5)] == [
        "flipped",
        "ablated",
        "scaled by 5",
        "scaled by 0.5",
    ]
