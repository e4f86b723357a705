"""Property-based tests: the artifact loaders and the CLI options under generated input.

Loaders: valid rankings, explanations and steering runs are generated, written, then
damaged (a field deleted or replaced by any JSON value, the text truncated or spliced
with garbage). Every load either returns an object whose invariants hold or raises
:class:`ArtifactError` with one line; nothing else ever escapes.

CLI: option values are generated (negative, zero, huge, NaN, garbage). Every run either
exits 0 with an output that is valid and says what was asked, or exits 2 with one line;
never a traceback, never status 1. The model is a tiny random Llama loaded once.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import random_prompts, tiny_text_model
from headpursuit import (
    CRITERIA,
    Activations,
    ArtifactError,
    Explanation,
    Head,
    HeadExplanation,
    HeadRanking,
    SteeringRun,
    UserError,
    capture,
    load_artifact,
    parse_head,
)
from headpursuit.cli import app
from headpursuit.io import TEMP_PREFIX, atomic_write, check_writable
from headpursuit.models import loading
from headpursuit.steering.hooks import POSITIONS

LOADER_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
DAMAGE_SETTINGS = settings(LOADER_SETTINGS, max_examples=200)
CLI_SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
texts = st.text(max_size=12)
# Values one step outside what a field allows: wrong sign, wrong type, beyond int64.
edge_values = st.sampled_from(
    [-1, 0, 1, 2**31, 2**63, -(2**70), 1.5, 1e308, True, None, "", "L1H1", [], [[]], {}]
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def heads_in(n_layers: int, n_heads: int):
    return st.builds(Head, st.integers(0, n_layers - 1), st.integers(0, n_heads - 1))


@st.composite
def rankings(draw) -> HeadRanking:
    n_layers, n_heads, k = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(0, 3))
    size = n_layers * n_heads

    def table(values):
        drawn = draw(st.lists(values, min_size=size, max_size=size))
        return torch.tensor(drawn, dtype=torch.float64).reshape(n_layers, n_heads)

    first = draw(st.integers(0, n_layers - 1))
    layers = draw(st.none() | st.just((first, draw(st.integers(first, n_layers - 1)))))
    support = draw(st.lists(st.integers(0, 500), min_size=size * k, max_size=size * k))
    return HeadRanking(
        concept=draw(texts),
        criterion=draw(st.sampled_from(CRITERIA)),
        scores=table(finite),
        evr=table(st.floats(0, 1) | st.just(math.nan)),
        support=torch.tensor(support, dtype=torch.long).reshape(n_layers, n_heads, k),
        n_atoms=k,
        model_id=draw(texts),
        fingerprint=draw(texts),
        token_ids=draw(st.lists(st.integers(0, 500), max_size=5)),
        layers=layers,
        tables={name: table(finite) for name in draw(st.lists(texts, max_size=2, unique=True))},
        settings=draw(st.dictionaries(st.text(max_size=5), st.integers() | texts, max_size=3)),
    )


@st.composite
def explanations(draw) -> Explanation:
    n_atoms, n_samples = draw(st.integers(1, 4)), draw(st.integers(2, 50))
    items = []
    for head in draw(st.lists(heads_in(40, 40), min_size=1, max_size=3)):
        k, m = draw(st.integers(0, n_atoms)), draw(st.integers(0, 4))
        items.append(
            HeadExplanation(
                head=head,
                somp_ids=draw(st.lists(st.integers(0, 999), min_size=k, max_size=k)),
                somp_tokens=draw(st.lists(texts, min_size=k, max_size=k)),
                evr=draw(st.lists(st.floats(0, 1), min_size=k, max_size=k)),
                lens_ids=draw(st.lists(st.integers(0, 999), min_size=m, max_size=m)),
                lens_tokens=draw(st.lists(texts, min_size=m, max_size=m)),
                lens_counts=draw(st.lists(st.integers(0, n_samples), min_size=m, max_size=m)),
            )
        )
    return Explanation(items, n_atoms, n_samples, draw(texts), draw(texts), draw(texts))


@st.composite
def steering_runs(draw) -> SteeringRun:
    heads = draw(st.lists(heads_in(6, 6), min_size=1, max_size=3, unique=True))
    free = [Head(l, h) for l in range(6) for h in range(6) if Head(l, h) not in heads]
    n_controls, n_prompts = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    controls = [
        draw(st.permutations(free))[: len(heads)] for _ in range(n_controls)
    ]  # disjoint from the steered heads, same size
    prompts = draw(st.lists(texts, min_size=n_prompts, max_size=n_prompts))

    def outputs():
        return draw(st.lists(texts, min_size=n_prompts, max_size=n_prompts))

    return SteeringRun(
        heads=heads,
        alpha=draw(finite),
        positions=draw(st.sampled_from(POSITIONS)),
        controls=controls,
        prompts=prompts,
        unmodified=outputs(),
        steered=outputs(),
        control_outputs=[outputs() for _ in controls],
        model_id=draw(texts),
        fingerprint=draw(texts),
        concept=draw(texts),
        max_new_tokens=draw(st.integers(0, 50)),
        borrowed=[{} for _ in controls],
    )


def json_paths(value, prefix=()):
    """Every path (a tuple of keys and indices) into a JSON value, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, (*prefix, index))


def _at(data, path):
    for step in path:
        data = data[step]
    return data


@st.composite
def damaged(draw, data: dict) -> str:
    """``data`` as JSON text with one kind of damage (half the time one value made hostile)."""
    how = draw(st.sampled_from(["edge", "edge", "edge", "replace", "delete", "truncate", "splice"]))
    data = json.loads(json.dumps(data))
    if how in ("edge", "replace", "delete"):
        paths = list(json_paths(data))[1:]
        leaves = [p for p in paths if not isinstance(_at(data, p), (dict, list))]
        path = draw(st.sampled_from(leaves if how == "edge" and leaves else paths))
        parent = _at(data, path[:-1])
        if how == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(edge_values if how == "edge" else json_values)
        return json.dumps(data)  # NaN/Infinity written as JSON's non-standard literals
    text = json.dumps(data)
    cut = draw(st.integers(0, len(text)))
    if how == "truncate":
        return text[:cut]
    return text[:cut] + draw(st.text(max_size=6)) + text[cut:]


def check_ranking(ranking: HeadRanking) -> None:
    n_layers, n_heads = ranking.shape
    assert torch.isfinite(ranking.scores).all()
    assert ranking.evr.shape == (n_layers, n_heads)
    assert ranking.support.shape == (n_layers, n_heads, ranking.n_atoms)
    assert (ranking.support >= 0).all()
    if ranking.layers is not None:
        assert 0 <= ranking.layers[0] <= ranking.layers[1] < n_layers
    order = ranking.order()
    assert sorted(order) == sorted(ranking.eligible())
    scores = [float(ranking.scores[h]) for h in order]
    assert scores == sorted(scores, reverse=True)
    assert all(t.shape == (n_layers, n_heads) for t in ranking.tables.values())


def check_explanation(explanation: Explanation) -> None:
    assert explanation.heads and explanation.n_atoms >= 1 and explanation.n_samples >= 2
    for item in explanation.heads:
        assert item.head.layer >= 0 and item.head.head >= 0
        assert len(item.somp_ids) == len(item.somp_tokens) == len(item.evr) <= explanation.n_atoms
        assert all(math.isfinite(x) for x in item.evr)
        assert len(item.lens_ids) == len(item.lens_tokens) == len(item.lens_counts)
        assert all(0 <= c <= explanation.n_samples for c in item.lens_counts)


def check_steering(run: SteeringRun) -> None:
    assert run.heads and math.isfinite(run.alpha) and run.positions in POSITIONS
    n = len(run.prompts)
    assert n >= 1 and len(run.unmodified) == len(run.steered) == n
    assert len(run.control_outputs) == len(run.controls)
    assert all(len(outputs) == n for outputs in run.control_outputs)
    for control in run.controls:
        assert len(control) == len(run.heads) and not set(control) & set(run.heads)


CASES = {
    "ranking": (HeadRanking, rankings(), check_ranking),
    "explanation": (Explanation, explanations(), check_explanation),
    "steering": (SteeringRun, steering_runs(), check_steering),
}


def load_or_refuse(cls, path: Path, check) -> str:
    """Load through the class and through load_artifact: a valid object or one-line refusal."""
    outcomes = []
    for load in (cls.load, load_artifact):
        try:
            artifact = load(path)
        except ArtifactError as error:
            assert len(str(error).splitlines()) == 1, str(error)
            outcomes.append("refused")
        else:
            assert isinstance(artifact, cls)
            check(artifact)
            outcomes.append("loaded")
    assert outcomes[0] == outcomes[1]
    return outcomes[0]


@pytest.mark.parametrize("name", list(CASES))
def test_valid_artifacts_round_trip(tmp_path, name):
    cls, strategy, check = CASES[name]

    @LOADER_SETTINGS
    @given(strategy)
    def run(artifact):
        path = artifact.save(tmp_path / "a.json")
        loaded = cls.load(path)
        check(loaded)
        assert loaded.to_json() == json.loads(path.read_text())

    run()


@pytest.mark.parametrize("name", list(CASES))
def test_damaged_artifacts_load_valid_or_are_refused_in_one_line(tmp_path, name):
    cls, strategy, check = CASES[name]

    @DAMAGE_SETTINGS
    @given(st.data())
    def run(data):
        artifact = data.draw(strategy)
        text = data.draw(damaged(artifact.to_json()))
        path = tmp_path / "a.json"
        path.write_text(text, encoding="utf-8")
        load_or_refuse(cls, path, check)

    run()


def test_a_crafted_shape_allocates_nothing(tmp_path):
    """A ranking that claims 1e9 x 1e9 heads (or a million layers) is refused from its header."""
    for shape in ([10**9, 10**9], [10**6, 10**6], [2, 10**6]):
        path = tmp_path / "r.json"
        path.write_text(
            json.dumps({"kind": "headpursuit.ranking", "schema_version": 2, "shape": shape})
        )
        with pytest.raises(ArtifactError, match="shape"):
            HeadRanking.load(path)


def test_keep_existing_keeps_the_first_file(tmp_path):
    target = tmp_path / "joined.gguf"
    atomic_write(target, lambda tmp: Path(tmp).write_text("first"), keep_existing=True)
    atomic_write(target, lambda tmp: Path(tmp).write_text("second"), keep_existing=True)
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["joined.gguf"]


def test_write_errors_the_user_can_fix_are_one_line_and_others_are_not_disguised(tmp_path):
    (tmp_path / "a_file").write_text("x")
    ranking = HeadRanking(
        "c", "evr", torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1, 0), 0, "m", "f"
    )
    with pytest.raises(UserError, match="Cannot write"):
        ranking.save(tmp_path / "a_file" / "ranking.json")  # a file where a folder should be

    def failing_disk(tmp: str) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError) as raised:
        atomic_write(tmp_path / "out.bin", failing_disk)
    assert not isinstance(raised.value, UserError)  # a hardware fault is not a user mistake
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # no temporary file left


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_is_refused_before_the_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError, match="no write permission"):
            check_writable(locked / "acts.safetensors")
    finally:
        locked.chmod(0o700)


# --- the CLI under generated option values ----------------------------------------------

TINY = tiny_text_model("llama_gqa")  # 3 layers x 6 heads, vocab 128
runner = CliRunner()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-properties")
    prompts = random_prompts(6)
    (root / "p.txt").write_text("\n".join(prompts) + "\n")
    (root / "words.txt").write_text("red\nblue\ngreen\n")
    capture(TINY, prompts, progress=False).save(root / "acts.safetensors")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loading, "load_model", lambda *a, **k: TINY)
        patch.chdir(root)
        args = ["rank", "acts.safetensors", "words.txt", "--criterion", "evr", "--layers", "1:2"]
        result = runner.invoke(app, [*args, "--out", "r.json"])
    assert result.exit_code == 0, result.output
    return root


def run_cli(root: Path, args: list[str]):
    """Run a command in ``root`` with the tiny model; assert the error contract."""
    out = root / "out.file"
    out.unlink(missing_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loading, "load_model", lambda *a, **k: TINY)
        patch.chdir(root)
        result = runner.invoke(app, [*args, "--out", str(out)])
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 2), (result.exit_code, result.output)
    assert not [p for p in root.iterdir() if p.name.startswith(TEMP_PREFIX)]
    if result.exit_code == 2:
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr
        assert not out.exists()
        return None
    return out


ints = st.integers(-3, 40)
numbers = st.sampled_from(
    ["-1", "0", "1", "2", "5", "1e30", "1e308", "-1e308", "nan", "inf", "-inf", "x"]
)


@CLI_SETTINGS
@given(
    batch_size=ints,
    limit=st.none() | ints,
    max_length=st.integers(-3, 600),
    pooling=st.sampled_from(["mean", "all", "last", "image", "x"]),
)
def test_capture_options(workdir, batch_size, limit, max_length, pooling):
    args = ["capture", "--prompts", "p.txt", "--batch-size", str(batch_size)]
    args += ["--max-length", str(max_length), "--pooling", pooling, "--no-progress", "--no-chat"]
    if limit is not None:
        args += ["--limit", str(limit)]
    out = run_cli(workdir, args)
    if out is not None:
        acts = Activations.load(out)
        expected = (workdir / "p.txt").read_text().splitlines()[: limit or None]
        assert acts.prompts == expected and acts.pooling == pooling
        assert torch.isfinite(acts.pooled).all() and acts.pooled.abs().sum() > 0


@CLI_SETTINGS
@given(
    criterion=st.sampled_from([*CRITERIA, "x"]),
    n_atoms=ints,
    n_random=st.integers(-1, 3),
    seed=st.integers(-2, 3),
    layers=st.none() | st.sampled_from(["0:2", "1:1", "2:0", "0:3", "-1:1", "a:b", "1", ""]),
    multi_token=st.sampled_from(["skip", "first", "x"]),
)
def test_rank_options(workdir, criterion, n_atoms, n_random, seed, layers, multi_token):
    args = ["rank", "acts.safetensors", "words.txt", "--criterion", criterion]
    args += ["--n-atoms", str(n_atoms), "--n-random", str(n_random), "--seed", str(seed)]
    args += ["--multi-token", multi_token]
    if layers is not None:
        args += ["--layers", layers]
    out = run_cli(workdir, args)
    if out is not None:
        ranking = HeadRanking.load(out)
        check_ranking(ranking)
        assert ranking.criterion == criterion and ranking.n_atoms <= n_atoms
        if layers:
            first, last = (int(x) for x in layers.split(":"))
            assert ranking.layers == (first, last)
            assert all(first <= h.layer <= last for h in ranking.order())


@CLI_SETTINGS
@given(
    heads=st.lists(
        st.sampled_from(["L0H0", "L2H5", "L1H3", "L3H0", "L0H6", "L-1H0", "0.1", "x"]), max_size=3
    ),
    top_k=st.none() | st.integers(-1, 20),
    n_atoms=st.integers(-1, 200),
)
def test_explain_options(workdir, heads, top_k, n_atoms):
    args = ["explain", "acts.safetensors", "--n-atoms", str(n_atoms)]
    for head in heads:
        args += ["--head", head]
    if top_k is not None:
        args += ["--ranking", "r.json", "--top-k", str(top_k)]
    out = run_cli(workdir, args)
    if out is not None:
        explanation = Explanation.load(out)
        check_explanation(explanation)
        asked = [parse_head(text) for text in heads]
        if top_k is not None:
            asked += HeadRanking.load(workdir / "r.json").top(top_k)
        assert [item.head for item in explanation.heads] == list(dict.fromkeys(asked))
        assert all(len(item.somp_ids) == n_atoms for item in explanation.heads)


@CLI_SETTINGS
@given(
    alpha=numbers,
    top_k=st.integers(-1, 8),
    controls=st.integers(-2, 3),
    max_new_tokens=st.integers(-1, 2),
    positions=st.sampled_from([*POSITIONS, "x"]),
)
def test_steer_options(workdir, alpha, top_k, controls, max_new_tokens, positions):
    args = ["steer", "--ranking", "r.json", "--top-k", str(top_k), f"--alpha={alpha}"]
    args += ["--controls", str(controls), "--max-new-tokens", str(max_new_tokens)]
    args += ["--positions", positions, "--prompt", "red blue", "--no-chat"]
    out = run_cli(workdir, args)
    if out is not None:
        run = SteeringRun.load(out)
        check_steering(run)
        assert run.alpha == float(alpha) and len(run.controls) == controls
        assert run.heads == HeadRanking.load(workdir / "r.json").top(top_k)


def test_user_errors_are_value_errors_but_not_every_value_error_is_a_user_error():
    """API callers catching ValueError keep working; the CLI's status 2 needs UserError."""
    assert issubclass(ArtifactError, ValueError) and issubclass(ArtifactError, UserError)
    assert not issubclass(ValueError, UserError)
