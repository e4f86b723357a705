"""Hostile input against the CLI: every bad value is one line and status 2, before the work.

Each case runs a command through typer's CliRunner with the model loader replaced by a tiny
random Llama; a case marked "before load" must fail without the loader being called at
all (so a real run would fail before loading a model or capturing). Also: a bug is a
traceback and status 1, never disguised as a user error; weak results carry a warning.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import random_prompts, tiny_text_model
from headpursuit import (
    Activations,
    Explanation,
    Head,
    HeadRanking,
    SteeringRun,
    capture,
    compare_generations,
    explain_heads,
    rank_heads,
)
from headpursuit.cli import app
from headpursuit.errors import Terminated
from headpursuit.models import AttentionSites, loading

runner = CliRunner()
TINY = tiny_text_model("llama_gqa")  # 3 layers x 6 heads, head_dim 12, vocab 128


class ModelLoaded(Exception):
    """Raised by the stand-in loader in cases that must fail before any model is loaded."""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Valid artifacts of the tiny model, and a set of hostile ones, in one folder."""
    root = tmp_path_factory.mktemp("hostile")
    prompts = random_prompts(12)
    (root / "p.txt").write_text("\n".join(prompts) + "\n")
    (root / "words.txt").write_text("red\nblue\ngreen\n")
    acts = capture(TINY, prompts, progress=False)
    acts.save(root / "acts.safetensors")
    sites = AttentionSites(TINY.model)
    ids = [TINY.tokenizer.convert_tokens_to_ids(w) for w in ("red", "blue", "green")]
    ranking = rank_heads(acts, sites, ids, criterion="evr", n_atoms=2, concept="words")
    ranking.save(root / "r.json")
    explanation = explain_heads(acts, sites, TINY.tokenizer, ranking.top(2), n_atoms=2)
    explanation.save(root / "e.json")
    run = compare_generations(TINY, ["red blue"], [Head(1, 1)], max_new_tokens=2, chat=False)
    run.save(root / "s.json")

    def variant(name: str, pooled: torch.Tensor, prompt_list: list[str]) -> None:
        Activations(
            pooled, acts.model_id, acts.fingerprint, "mean", acts.d_model, prompt_list
        ).save(root / f"{name}.safetensors")

    variant("one", acts.pooled[:1], prompts[:1])
    variant("dup_prompts", acts.pooled[:2], [prompts[0]] * 2)
    # Two copies of one prompt differ by float round-off, never exactly (batch rows).
    noisy = acts.pooled[:1].repeat(3, 1, 1, 1)
    noisy = noisy + 1e-7 * torch.randn(noisy.shape, generator=torch.Generator().manual_seed(0))
    variant("near_dup", noisy, prompts[:3])
    variant("zero", torch.zeros_like(acts.pooled), prompts)
    constant = acts.pooled.clone()
    constant[:, 0, 0] = 0.5
    variant("const_head", constant, prompts)
    other = acts.pooled[:, :2]  # a 2-layer model's activations
    Activations(other, "other", "0" * 16, "mean", acts.d_model, prompts).save(
        root / "other.safetensors"
    )
    (root / "noise.safetensors").write_bytes(bytes(range(256)) * 4)
    (root / "adir").mkdir()
    (root / "fulldir").mkdir()
    (root / "fulldir" / "notes.txt").write_text("not ours\n")
    (root / "empty.txt").write_text("# nothing\n\n")
    (root / "one.txt").write_text("red blue\n")
    (root / "dup.txt").write_text("red blue\nred blue\n")
    for name, value in {"null": "null", "num": "3", "list": '["a"]'}.items():
        (root / f"{name}.jsonl").write_text(f'{{"text": "red"}}\n{{"text": {value}}}\n')

    base = ranking.to_json()

    def bad_ranking(name: str, change, text: str | None = None) -> None:
        data = json.loads(json.dumps(base))
        change(data)
        (root / f"r_{name}.json").write_text(text if text is not None else json.dumps(data))

    bad_ranking("nan", lambda d: d["scores"][0].__setitem__(0, math.nan))
    bad_ranking("big_shape", lambda d: d.__setitem__("shape", [10**9, 10**9]))
    bad_ranking("neg_atoms", lambda d: d.__setitem__("n_atoms", -1))
    bad_ranking("window", lambda d: d.__setitem__("layers", [0, 99]))
    bad_ranking("neg_token", lambda d: d["support"][0][0].__setitem__(0, -1))
    bad_ranking("no_shape", lambda d: d.pop("shape"))
    bad_ranking("deep", lambda d: None, "[" * 100_000 + "]" * 100_000)
    long_int = "1" + "0" * 5000
    bad_ranking("long_int", lambda d: None, f'{{"kind": "headpursuit.ranking", "n": {long_int}}}')
    bad_ranking(
        "other_shape",
        lambda d: d.update(
            shape=[2, 6], scores=d["scores"][:2], evr=d["evr"][:2], support=d["support"][:2]
        ),
    )
    e = explanation.to_json()
    e["heads"][0]["evr"][0] = math.nan
    (root / "e_nan.json").write_text(json.dumps(e))
    s = run.to_json()
    s["examples"][0]["controls"] = []
    (root / "s_mismatch.json").write_text(json.dumps(s))
    return root


def invoke(root: Path, monkeypatch, args: list[str], *, load: bool):
    """Run the CLI in ``root``; the stand-in loader raises ModelLoaded unless ``load``."""

    def loader(*_args, **_kwargs):
        if not load:
            raise ModelLoaded("the model was loaded before the error")
        return TINY

    monkeypatch.setattr(loading, "load_model", loader)
    monkeypatch.chdir(root)
    return runner.invoke(app, args)


def assert_one_line_error(result, contains: str, code: int = 2) -> str:
    assert not isinstance(result.exception, ModelLoaded), "failed only after loading the model"
    assert result.exit_code == code, (result.exit_code, result.output)
    # One error line; a notice printed before it (e.g. "Warning: ... no chat template")
    # is its own line and not part of the error.
    lines = [x for x in result.stderr.strip().splitlines() if not x.startswith("Warning: ")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    assert contains.lower() in lines[0].lower(), lines[0]
    return lines[0]


OUT = ["--out", "out.file"]
# (command line, expected part of the message). All fail before the model is loaded.
BEFORE_LOAD = {
    # capture: options, paths, prompt sources
    "capture --batch-size -3": (
        ["capture", "--prompts", "p.txt", "--batch-size", "-3", *OUT],
        "--batch-size",
    ),
    "capture --batch-size 0": (
        ["capture", "--prompts", "p.txt", "--batch-size", "0", *OUT],
        "--batch-size",
    ),
    "capture --limit -1": (["capture", "--prompts", "p.txt", "--limit", "-1", *OUT], "--limit"),
    "capture --max-length -5": (
        ["capture", "--prompts", "p.txt", "--max-length", "-5", *OUT],
        "--max-length",
    ),
    # Activations are a directory: a new or empty one is fine, one of other files is not.
    "capture --out a directory of other files": (
        ["capture", "--prompts", "p.txt", "--out", "fulldir"],
        "holding other files",
    ),
    "capture --out an existing file": (
        ["capture", "--prompts", "p.txt", "--out", "p.txt"],
        "is a file",
    ),
    "capture --out under a file": (
        ["capture", "--prompts", "p.txt", "--out", "p.txt/x"],
        "not a folder",
    ),
    "capture --out /dev/null": (
        ["capture", "--prompts", "p.txt", "--out", "/dev/null"],
        "not a regular file",
    ),
    "capture --out name too long": (
        ["capture", "--prompts", "p.txt", "--out", "x" * 300],
        "too long",
    ),
    "capture JSONL null": (
        ["capture", "--prompts", "null.jsonl", "--column", "text", *OUT],
        "found None",
    ),
    "capture JSONL number": (
        ["capture", "--prompts", "num.jsonl", "--column", "text", *OUT],
        "found 3",
    ),
    "capture JSONL list": (
        ["capture", "--prompts", "list.jsonl", "--column", "text", *OUT],
        "found ['a']",
    ),
    "capture JSONL without --column": (["capture", "--prompts", "null.jsonl", *OUT], "--column"),
    "capture one prompt": (["capture", "--prompts", "one.txt", *OUT], "two distinct prompts"),
    "capture duplicate prompts only": (
        ["capture", "--prompts", "dup.txt", *OUT],
        "two distinct prompts",
    ),
    "capture no prompts": (["capture", "--prompts", "empty.txt", *OUT], "No prompts"),
    "capture missing prompts": (["capture", "--prompts", "missing.txt", *OUT], "missing.txt"),
    "capture --pooling bogus": (
        ["capture", "--prompts", "p.txt", "--pooling", "x", *OUT],
        "--pooling",
    ),
    "capture --device-map bogus": (
        ["capture", "--prompts", "p.txt", "--device-map", "x", *OUT],
        "--device-map",
    ),
    "capture --device bogus": (
        ["capture", "--prompts", "p.txt", "--device", "x", *OUT],
        "Unknown device",
    ),
    "capture --device and --device-map": (
        ["capture", "--prompts", "p.txt", "--device", "cpu", "--device-map", "auto", *OUT],
        "not both",
    ),
    "capture --dtype int8": (["capture", "--prompts", "p.txt", "--dtype", "int8", *OUT], "--dtype"),
    # rank: activations, concept, options
    "rank missing activations": (
        ["rank", "missing.safetensors", "words.txt", *OUT],
        "No activations",
    ),
    "rank JSON as activations": (
        ["rank", "r.json", "words.txt", *OUT],
        "not a headpursuit activations",
    ),
    "rank noise as activations": (["rank", "noise.safetensors", "words.txt", *OUT], "activations"),
    "rank one sample": (["rank", "one.safetensors", "words.txt", *OUT], "no head can be ranked"),
    "rank duplicate prompts": (
        ["rank", "dup_prompts.safetensors", "words.txt", *OUT],
        "no head can be ranked",
    ),
    "rank near-duplicate samples": (
        ["rank", "near_dup.safetensors", "words.txt", *OUT],
        "no head can be ranked",
    ),
    "rank all-zero activations": (
        ["rank", "zero.safetensors", "words.txt", *OUT],
        "no head can be ranked",
    ),
    "rank --layers a:b": (
        ["rank", "acts.safetensors", "words.txt", "--layers", "a:b", *OUT],
        "FIRST:LAST",
    ),
    "rank --layers 2:1": (
        ["rank", "acts.safetensors", "words.txt", "--layers", "2:1", *OUT],
        "not inside",
    ),
    "rank --layers 0:99": (
        ["rank", "acts.safetensors", "words.txt", "--layers", "0:99", *OUT],
        "not inside",
    ),
    "rank --n-atoms 0": (
        ["rank", "acts.safetensors", "words.txt", "--n-atoms", "0", *OUT],
        "--n-atoms",
    ),
    "rank --n-random 0": (
        ["rank", "acts.safetensors", "words.txt", "--n-random", "0", *OUT],
        "--n-random",
    ),
    "rank --seed -1": (["rank", "acts.safetensors", "words.txt", "--seed", "-1", *OUT], "--seed"),
    "rank --criterion bogus": (
        ["rank", "acts.safetensors", "words.txt", "--criterion", "x", *OUT],
        "--criterion",
    ),
    "rank --multi-token bogus": (
        ["rank", "acts.safetensors", "words.txt", "--multi-token", "x", *OUT],
        "--multi-token",
    ),
    "rank unknown concept": (["rank", "acts.safetensors", "flavours", *OUT], "Unknown concept"),
    "rank missing word list": (["rank", "acts.safetensors", "missing.txt", *OUT], "missing.txt"),
    "rank --csv a directory": (
        ["rank", "acts.safetensors", "words.txt", "--csv", "adir", *OUT],
        "directory",
    ),
    "rank --show -1": (["rank", "acts.safetensors", "words.txt", "--show", "-1", *OUT], "--show"),
    # explain: heads against the activations' shape, rankings, degenerate heads
    "explain head outside the model": (
        ["explain", "acts.safetensors", "--head", "L99H0", *OUT],
        "outside this model",
    ),
    "explain head L-1H0": (
        ["explain", "acts.safetensors", "--head", "L-1H0", *OUT],
        "Cannot read head",
    ),
    "explain ranking of another shape": (
        ["explain", "acts.safetensors", "--ranking", "r_other_shape.json", *OUT],
        "not this one",
    ),
    "explain ranking of another model": (
        ["explain", "other.safetensors", "--ranking", "r.json", *OUT],
        "not of this model",
    ),
    "explain missing ranking": (
        ["explain", "acts.safetensors", "--ranking", "missing.json", *OUT],
        "No ranking",
    ),
    "explain --top-k beyond the heads": (
        ["explain", "acts.safetensors", "--ranking", "r.json", "--top-k", "99", *OUT],
        "k must be between 1 and 18",
    ),
    "explain constant head": (
        ["explain", "const_head.safetensors", "--head", "L0H0", *OUT],
        "nothing to explain",
    ),
    "explain no heads": (["explain", "acts.safetensors", *OUT], "No heads given"),
    # steer: numbers, heads, ranking files
    "steer --alpha nan": (
        ["steer", "--head", "L0H0", "--prompt", "red", "--alpha", "nan", *OUT],
        "finite",
    ),
    "steer --alpha inf": (
        ["steer", "--head", "L0H0", "--prompt", "red", "--alpha", "inf", *OUT],
        "finite",
    ),
    "steer --alpha -inf": (
        ["steer", "--head", "L0H0", "--prompt", "red", "--alpha=-inf", *OUT],
        "finite",
    ),
    "steer --alpha abc": (
        ["steer", "--head", "L0H0", "--prompt", "red", "--alpha", "abc", *OUT],
        "--alpha",
    ),
    "steer --controls -2": (
        ["steer", "--head", "L0H0", "--prompt", "red", "--controls", "-2", *OUT],
        "--controls",
    ),
    "steer --max-new-tokens 0": (
        ["steer", "--head", "L0H0", "--prompt", "red", "--max-new-tokens", "0", *OUT],
        "--max-new-tokens",
    ),
    "steer --threads -1": (
        ["steer", "--head", "L0H0", "--prompt", "red", "--threads", "-1", *OUT],
        "--threads",
    ),
    "steer --positions bogus": (
        ["steer", "--head", "L0H0", "--prompt", "red", "--positions", "x", *OUT],
        "--positions",
    ),
    "steer empty prompt": (["steer", "--head", "L0H0", "--prompt", " ", *OUT], "empty"),
    "steer --out a directory": (
        ["steer", "--head", "L0H0", "--prompt", "red", "--out", "adir"],
        "directory",
    ),
    "steer ranking with NaN": (
        ["steer", "--ranking", "r_nan.json", "--prompt", "red", *OUT],
        "NaN",
    ),
    "steer ranking shape 1e9 x 1e9": (
        ["steer", "--ranking", "r_big_shape.json", "--prompt", "red", *OUT],
        "shape",
    ),
    "steer ranking n_atoms -1": (
        ["steer", "--ranking", "r_neg_atoms.json", "--prompt", "red", *OUT],
        "n_atoms",
    ),
    "steer ranking window 0:99": (
        ["steer", "--ranking", "r_window.json", "--prompt", "red", *OUT],
        "layers",
    ),
    "steer ranking token id -1": (
        ["steer", "--ranking", "r_neg_token.json", "--prompt", "red", *OUT],
        "token id -1",
    ),
    "steer ranking without shape": (
        ["steer", "--ranking", "r_no_shape.json", "--prompt", "red", *OUT],
        "missing field 'shape'",
    ),
    "steer ranking nested 1e5 deep": (
        ["steer", "--ranking", "r_deep.json", "--prompt", "red", *OUT],
        "nested too deeply",
    ),
    "steer ranking 5000-digit integer": (
        ["steer", "--ranking", "r_long_int.json", "--prompt", "red", *OUT],
        "digits",
    ),
    "steer explanation as ranking": (
        ["steer", "--ranking", "e.json", "--prompt", "red", *OUT],
        "not a headpursuit.ranking",
    ),
    # report
    "report NaN in an explanation": (["report", "e_nan.json", "--out", "rep.html"], "NaN"),
    "report steering run with missing controls": (
        ["report", "s_mismatch.json", "--out", "rep.html"],
        "control",
    ),
    "report activations": (["report", "acts.safetensors", "--out", "rep.html"], "activations"),
    "report --top-k 0": (["report", "r.json", "--top-k", "0", "--out", "rep.html"], "--top-k"),
    "report --out a directory": (["report", "r.json", "--out", "adir"], "directory"),
    # the experiment commands
    "qa --percents abc": (["qa", "--percents", "abc"], "--percents"),
    "qa --percents 150": (["qa", "--percents", "150"], "at most 100"),
    "qa --ks 0": (["qa", "--ks", "0,3"], "--ks"),
    "qa --alphas nan": (["qa", "--alphas", "nan"], "finite"),
    "qa --criterion bogus": (["qa", "--criterion", "x"], "criterion"),
    "qa --compare bogus": (["qa", "--compare", "evr,x"], "criterion"),
    "qa unknown concept": (["qa", "planets"], "concept"),
    "qa --split train": (["qa", "--split", "train"], "--split"),
    "qa --controls 0": (["qa", "--controls", "0"], "--controls"),
    "qa --out a directory": (["qa", "--out", "adir"], "directory"),
    "wordfreq --alphas abc": (["wordfreq", "--alphas", "abc"], "--alphas"),
    "wordfreq --alphas mean": (["wordfreq", "--alphas", "0,mean"], "--alphas"),
    "wordfreq --percents 0": (["wordfreq", "--percents", "0"], "--percents"),
    "wordfreq --ks 1.5": (["wordfreq", "--ks", "1.5"], "--ks"),
    "wordfreq --criterion bogus": (["wordfreq", "--criterion", "x"], "criterion"),
    "wordfreq --compare bogus": (["wordfreq", "--compare", "evr,x"], "criterion"),
    "wordfreq --layers bogus": (["wordfreq", "--layers", "3-9"], "FIRST:LAST"),
    "wordfreq --controls 0": (["wordfreq", "--controls", "0"], "--controls"),
    "wordfreq --split train": (["wordfreq", "--split", "train"], "--split"),
    "wordfreq --max-new-tokens 0": (["wordfreq", "--max-new-tokens", "0"], "--max-new-tokens"),
    "wordfreq unknown concept": (["wordfreq", "planets"], "concept"),
    "wordfreq missing prompt file": (["wordfreq", "--prompts", "nope.txt"], "prompt file"),
    "wordfreq too few prompts": (["wordfreq", "words.txt", "--prompts", "words.txt"], "prompts"),
    "wordfreq --device bogus": (["wordfreq", "--device", "gpu9"], "device"),
    "wordfreq --out a directory": (["wordfreq", "--out", "adir"], "directory"),
    "amplify --max-new-tokens 0": (["amplify", "--max-new-tokens", "0"], "--max-new-tokens"),
    "amplify --alphas inf": (["amplify", "--alphas", "inf"], "finite"),
    "amplify --ks 0": (["amplify", "--ks", "0"], "--ks"),
    "amplify --criterion bogus": (["amplify", "--criterion", "x"], "criterion"),
    "amplify --split train": (["amplify", "--split", "train"], "--split"),
    "amplify --controls 0": (["amplify", "--controls", "0"], "--controls"),
    "amplify --out a directory": (["amplify", "--out", "adir"], "directory"),
    "classify --ks x": (["classify", "--ks", "x"], "--ks"),
    "classify --ks 0": (["classify", "--ks", "0"], "--ks"),
    "classify --percents 150": (["classify", "--percents", "150"], "at most 100"),
    "classify --alphas nan": (["classify", "--alphas", "nan"], "finite"),
    "classify --criterion bogus": (["classify", "--criterion", "x"], "criterion"),
    "classify --compare bogus": (["classify", "--compare", "evr,x"], "criterion"),
    "classify --controls 0": (["classify", "--controls", "0"], "--controls"),
    "classify --layers bogus": (["classify", "--layers", "3-9"], "FIRST:LAST"),
    "classify --positions bogus": (["classify", "--positions", "x"], "--positions"),
    "classify --n-select 0": (["classify", "--n-select", "0"], "--n-select"),
    "classify --batch-size 0": (["classify", "--batch-size", "0"], "--batch-size"),
    "classify --nontarget bogus": (["classify", "--nontarget", "cifar"], "--nontarget"),
    "classify --nontarget the target": (["classify", "digits", "--nontarget", "digits"], "target"),
    "classify --device bogus": (["classify", "--device", "gpu9"], "device"),
    "classify --images without --labels": (["classify", "mnist", "--images", "adir"], "--labels"),
    "classify no bundled images": (["classify", "svhn"], "--images"),
    "classify --n-eval above the test split": (["classify", "fashion", "--n-eval", "2001"], "2000"),
    "classify --out a directory": (["classify", "--out", "adir"], "directory"),
    "caption --alphas abc": (["caption", "--alphas", "abc"], "--alphas"),
    "caption --alphas mixing directions": (["caption", "--alphas=-1,5"], "two experiments"),
    "caption --ks 0": (["caption", "--ks", "0"], "--ks"),
    "caption --percents 0": (["caption", "--percents", "0"], "--percents"),
    "caption --criterion bogus": (["caption", "--criterion", "x"], "criterion"),
    "caption --controls 0": (["caption", "--controls", "0"], "--controls"),
    "caption --positions bogus": (["caption", "--positions", "x"], "--positions"),
    "caption --max-new-tokens 0": (["caption", "--max-new-tokens", "0"], "--max-new-tokens"),
    "caption --out a directory": (["caption", "--out", "adir"], "directory"),
}


@pytest.mark.parametrize("case", list(BEFORE_LOAD))
def test_bad_input_fails_before_the_model_loads(files, monkeypatch, case):
    args, message = BEFORE_LOAD[case]
    before = set(files.rglob("*"))
    result = invoke(files, monkeypatch, args, load=False)
    assert_one_line_error(result, message)
    assert set(files.rglob("*")) == before  # nothing written, no temporary file left


ALL_HEADS = [arg for l in range(3) for h in range(6) for arg in ("--head", f"L{l}H{h}")]

# Cases that need the model itself (its vocabulary, its head count, whether it sees images):
# still one line, status 2, and nothing written.
AFTER_LOAD = {
    "capture --pooling image on a language model": (
        ["capture", "--prompts", "p.txt", "--pooling", "image", *OUT],
        "needs a vision-language model",
    ),
    "explain --n-atoms beyond the vocabulary": (
        ["explain", "acts.safetensors", "--head", "L0H1", "--n-atoms", "1000", *OUT],
        "between 1 and 128",
    ),
    "steer head outside the model": (
        ["steer", "--head", "L99H0", "--prompt", "red", *OUT],
        "outside this model",
    ),
    "steer --alpha 1e30 (activations overflow)": (
        [
            "steer",
            "--head",
            "L1H1",
            "--prompt",
            "red",
            "--alpha",
            "1e30",
            "--max-new-tokens",
            "2",
            *OUT,
        ],
        "overflow",
    ),
    "steer every head (no disjoint controls)": (
        ["steer", *ALL_HEADS, "--prompt", "red", "--max-new-tokens", "1", *OUT],
        "Not enough heads",
    ),
}


@pytest.mark.parametrize("case", list(AFTER_LOAD))
def test_bad_input_that_needs_the_model_is_one_line(files, monkeypatch, case):
    args, message = AFTER_LOAD[case]
    before = set(files.rglob("*"))
    result = invoke(
        files, monkeypatch, [*args, "--no-progress"] if args[0] == "capture" else args, load=True
    )
    assert_one_line_error(result, message)
    assert set(files.rglob("*")) == before


def test_device_cuda_without_a_gpu_is_refused_before_loading(files, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for option in ("--device", "--device-map"):
        result = invoke(
            files, monkeypatch, ["capture", "--prompts", "p.txt", option, "cuda", *OUT], load=False
        )
        assert_one_line_error(result, "no CUDA GPU")


# --- valid but weak: the result is written, and a warning says why it is weak -----------


def test_constant_head_is_ranked_with_a_warning(files, monkeypatch, tmp_path):
    out = tmp_path / "r.json"
    args = ["rank", "const_head.safetensors", "words.txt", "--criterion", "evr", "--out", str(out)]
    result = invoke(files, monkeypatch, args, load=True)
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warning) == 1 and "L0H0" in warning[0] and "means nothing" in warning[0]
    ranking = HeadRanking.load(out)
    assert float(ranking.evr[0, 0]) == 0.0  # no signal after centring
    assert Head(0, 0) not in ranking.top(5)


def test_some_duplicate_prompts_are_captured_with_a_warning(files, monkeypatch, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("red blue\nw1 w2\nred blue\n")
    out = tmp_path / "acts.safetensors"
    args = ["capture", "--prompts", str(prompts), "--out", str(out), "--no-progress", "--no-chat"]
    result = invoke(files, monkeypatch, args, load=True)
    assert result.exit_code == 0, result.output
    assert "Warning: 1 duplicate prompt(s)" in result.stderr
    assert Activations.load(out).prompts == ["red blue", "w1 w2", "red blue"]


def test_limit_keeps_exactly_the_first_n_prompts(files, monkeypatch, tmp_path):
    out = tmp_path / "acts.safetensors"
    args = ["capture", "--prompts", "p.txt", "--limit", "12", "--out", str(out), "--no-progress"]
    result = invoke(files, monkeypatch, args, load=True)
    assert result.exit_code == 0, result.output
    expected = (files / "p.txt").read_text().splitlines()
    assert Activations.load(out).prompts == expected  # the last prompt is kept


# --- a bug is a bug: traceback, a request to report it, status 1 -------------------------


@pytest.mark.parametrize("bug", [KeyError("injected"), ValueError("injected"), OSError("injected")])
def test_a_bug_is_a_traceback_and_status_1(files, monkeypatch, bug):
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr("headpursuit.activations.prompts.read_prompts", broken)
    result = invoke(files, monkeypatch, ["capture", "--prompts", "p.txt", *OUT], load=False)
    assert result.exit_code == 1, result.output
    assert "Traceback" in result.stderr and "injected" in result.stderr
    assert "bug in headpursuit" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    ("signal_error", "code", "word"),
    [(KeyboardInterrupt(), 130, "Interrupted"), (Terminated(), 143, "Terminated")],
)
def test_interrupt_inside_a_command_is_one_line(files, monkeypatch, signal_error, code, word):
    def interrupted(*args, **kwargs):
        raise signal_error

    monkeypatch.setattr(loading, "load_model", interrupted)
    monkeypatch.chdir(files)
    before = set(files.rglob("*"))
    result = runner.invoke(app, ["capture", "--prompts", "p.txt", *OUT])
    assert result.exit_code == code
    assert result.stderr.strip().startswith(word) and len(result.stderr.strip().splitlines()) == 1
    assert set(files.rglob("*")) == before


def test_valid_artifacts_of_the_fixture_load(files):
    """The hostile cases above differ from valid files only by the damage they name."""
    assert HeadRanking.load(files / "r.json").shape == (3, 6)
    assert Explanation.load(files / "e.json").heads
    assert SteeringRun.load(files / "s.json").alpha == -1.0
