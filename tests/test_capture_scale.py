"""Capture at scale: shards on disk, resume, several processes, huge prompts, flat memory.

Oracles: safetensors' own reader for the shard files, the in-memory capture, an
uninterrupted run for a resumed one, a one-process run for a two-process one, and a
tensor-allocation tracer for the memory bound.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode
from typer.testing import CliRunner

from conftest import random_prompts, tiny_model
from headpursuit import (
    Activations,
    ArtifactError,
    AttentionSites,
    DegenerateDataError,
    Head,
    InputError,
    ShardedActivations,
    capture,
    capture_to_disk,
    distributed,
    head_somp,
    rank_heads,
)
from headpursuit.activations import shards
from headpursuit.cli import app
from headpursuit.ranking import head_ranking

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _concatenated_shards(directory: Path) -> torch.Tensor:
    """Oracle for the layout: safetensors' own loader on every shard file, in name order."""
    names = sorted(p for p in directory.iterdir() if p.name.startswith("shard-"))
    return torch.cat([load_file(str(p))["pooled"] for p in names])


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on one thread: on a busy machine, thread hand-offs cost more than the math."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama_gqa")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, model):
    """The tiny model as a checkpoint directory, for the command line in other processes."""
    path = tmp_path_factory.mktemp("tiny") / "model"
    model.model.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


# --- the format -------------------------------------------------------------------------


def test_disk_capture_matches_the_in_memory_capture(tmp_path, model):
    prompts = random_prompts(11, seed=5)
    out = capture_to_disk(model, prompts, tmp_path / "acts", shard_size=4, progress=False)
    assert _files(out) == [
        "meta.json",
        "prompts.jsonl",
        "shard-00000.safetensors",
        "shard-00001.safetensors",
        "shard-00002.safetensors",
    ]
    on_disk = _concatenated_shards(out)
    assert on_disk.shape == (11, 3, 6, 12)
    in_memory = capture(model, prompts, progress=False)
    torch.testing.assert_close(on_disk, in_memory.pooled, rtol=1e-5, atol=1e-6)
    loaded = Activations.load(out)
    assert torch.equal(loaded.pooled, on_disk)
    assert loaded.prompts == prompts
    assert (loaded.model_id, loaded.fingerprint, loaded.pooling, loaded.d_model) == (
        model.model_id,
        model.fingerprint,
        "mean",
        48,
    )
    lines = (out / "prompts.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == prompts
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] is True and meta["schema_version"] == 3
    assert [(s["start"], s["stop"]) for s in meta["shards"]] == [(0, 4), (4, 8), (8, 11)]
    for entry in meta["shards"]:
        assert hashlib.sha256((out / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]


def test_save_writes_the_same_format_and_round_trips_exactly(tmp_path, model):
    odd = 'red line\nbreak \u2028 "q" \u00e9'  # newline, JSON-special and non-ASCII
    acts = capture(model, [*random_prompts(5, seed=1), odd], progress=False)
    one = acts.save(tmp_path / "one")
    many = acts.save(tmp_path / "many", shard_size=2)
    assert _files(one) == ["meta.json", "prompts.jsonl", "shard-00000.safetensors"]
    assert len(_files(many)) == 5
    for path in (one, many):
        back = Activations.load(path)
        assert torch.equal(back.pooled, acts.pooled)
        for name in ("model_id", "fingerprint", "pooling", "d_model", "prompts", "settings"):
            assert getattr(back, name) == getattr(acts, name)
    assert Activations.sniff(one) and not Activations.sniff(tmp_path)
    acts.pooled = acts.pooled * 2  # saving again replaces the artifact
    acts.save(one)
    assert torch.equal(Activations.load(one).pooled, acts.pooled)
    assert _files(tmp_path) == ["many", "one"]


def _legacy_file(path: Path, acts: Activations, version: int) -> None:
    """A single-file artifact as headpursuit 0.1 wrote it (schema 1 or 2), built by hand."""
    metadata = {
        "kind": "headpursuit.activations",
        "schema_version": str(version),
        "model_id": acts.model_id,
        "fingerprint": acts.fingerprint,
        "pooling": acts.pooling,
        "d_model": str(acts.d_model),
        "n_samples": str(acts.n_samples),
        "library_version": "0.1.0",
    }
    tensors = {"pooled": acts.pooled.contiguous()}
    if version == 1:
        metadata["prompts"] = json.dumps(acts.prompts)
    else:
        encoded = [p.encode("utf-8") for p in acts.prompts]
        tensors["prompt_bytes"] = torch.tensor(list(b"".join(encoded)), dtype=torch.uint8)
        tensors["prompt_ends"] = torch.tensor([len(b) for b in encoded]).cumsum(0)
    save_file(tensors, str(path), metadata)


@pytest.mark.parametrize("version", [1, 2])
def test_single_files_of_earlier_versions_still_load(tmp_path, model, version):
    acts = capture(model, random_prompts(4, seed=2), progress=False)
    path = tmp_path / "old.safetensors"
    _legacy_file(path, acts, version)
    for back in (Activations.load(path), Activations.open(path)):
        assert isinstance(back, Activations)
        assert torch.equal(back.pooled, acts.pooled)
        assert back.prompts == acts.prompts and back.fingerprint == acts.fingerprint
    converted = Activations.load(path).save(tmp_path / "new")
    assert torch.equal(Activations.load(converted).pooled, acts.pooled)


# --- refusing bad artifacts -----------------------------------------------------------------


def _rewrite_meta(path: Path, change) -> None:
    meta = json.loads((path / "meta.json").read_text())
    change(meta)
    (path / "meta.json").write_text(json.dumps(meta))


def _replace_shard(path: Path, tensor: torch.Tensor, index: int = 1) -> None:
    """Put another tensor in shard ``index`` and record its checksum, so only its content is wrong."""
    name = f"shard-{index:05d}.safetensors"
    save_file({"pooled": tensor}, str(path / name))
    digest = hashlib.sha256((path / name).read_bytes()).hexdigest()
    _rewrite_meta(path, lambda m: m["shards"][index].update(sha256=digest))


def _nan_shard(path: Path) -> None:
    pooled = load_file(str(path / "shard-00001.safetensors"))["pooled"]
    pooled[0, 0, 0, 0] = float("nan")
    _replace_shard(path, pooled)


def _flip_a_byte(path: Path) -> None:
    shard = path / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))


CORRUPTIONS = {
    "wrong kind": (lambda p: _rewrite_meta(p, lambda m: m.update(kind="x")), "kind='x'"),
    "newer schema": (lambda p: _rewrite_meta(p, lambda m: m.update(schema_version=9)), "Upgrade"),
    "missing key": (lambda p: _rewrite_meta(p, lambda m: m.pop("fingerprint")), "fingerprint"),
    "unfinished": (lambda p: _rewrite_meta(p, lambda m: m.update(complete=False)), "unfinished"),
    "missing shard": (lambda p: (p / "shard-00001.safetensors").unlink(), "missing"),
    "shard outside": (
        lambda p: _rewrite_meta(p, lambda m: m["shards"][0].update(file="../x.safetensors")),
        "shard list",
    ),
    "huge shape": (
        lambda p: _rewrite_meta(
            p, lambda m: (m.update(shape=[2**39, 3, 6, 12]), m["prompts"].update(count=2**39))
        ),
        "shard list",
    ),
    "integer dtype": (
        lambda p: _replace_shard(p, torch.zeros(3, 3, 6, 12, dtype=torch.int32)),
        "floating point",
    ),
    "three dims": (lambda p: _replace_shard(p, torch.zeros(3, 18, 12)), "3 dims"),
    "other shape": (lambda p: _replace_shard(p, torch.zeros(3, 3, 5, 12)), "shape [3, 3, 5, 12]"),
    "NaN": (_nan_shard, "NaN"),
    "checksum": (_flip_a_byte, "checksum"),
    "prompts count": (
        lambda p: (p / "prompts.jsonl").write_text('"a"\n'),
        "checksum",
    ),
    "prompts count with checksum": (
        lambda p: (
            (p / "prompts.jsonl").write_text('"a"\n'),
            _rewrite_meta(
                p,
                lambda m: m["prompts"].update(sha256=hashlib.sha256(b'"a"\n').hexdigest()),
            ),
        ),
        "1 prompts for 9 samples",
    ),
}


@pytest.fixture(scope="module")
def good_artifact(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("good") / "acts"
    capture(model, random_prompts(9, seed=3), progress=False).save(path, shard_size=3)
    return path


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_damaged_artifacts_are_refused_with_one_line(tmp_path, good_artifact, name):
    corrupt, message = CORRUPTIONS[name]
    path = tmp_path / "acts"
    shutil.copytree(good_artifact, path)
    corrupt(path)
    for read in (Activations.load, lambda p: Activations.open(p).prompts):
        with pytest.raises(ArtifactError) as caught:
            read(path)
        text = str(caught.value)
        assert message in text and "\n" not in text, text


# --- resuming -----------------------------------------------------------------------------


class Interrupt:
    """Raise KeyboardInterrupt at the model's ``after``-th capture batch (a pre-hook).

    Only forward passes under ``torch.inference_mode`` count: capture runs its batches so,
    while the one probe pass that ``AttentionSites`` makes to verify the architecture (on
    random ids, under ``no_grad``) is not a capture batch.
    """

    def __init__(self, model, after: int):
        self.calls, self.after = 0, after
        self.handle = model.model.base_model.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        if not torch.is_inference_mode_enabled():
            return
        self.calls += 1
        if self.calls == self.after:
            raise KeyboardInterrupt


def test_an_interrupted_capture_resumes_to_the_uninterrupted_result(tmp_path, model):
    prompts = random_prompts(17, seed=6)
    options = dict(shard_size=3, batch_size=2, progress=False)
    whole = capture_to_disk(model, prompts, tmp_path / "whole", **options)
    broken = tmp_path / "broken"
    interrupt = Interrupt(model, after=5)  # shards are 2 batches: two shards, then a stop
    try:
        with pytest.raises(KeyboardInterrupt):
            capture_to_disk(model, prompts, broken, **options)
    finally:
        interrupt.handle.remove()
    assert [f for f in _files(broken) if f.startswith("shard")] == [
        "shard-00000.safetensors",
        "shard-00001.safetensors",
    ]
    with pytest.raises(ArtifactError, match=r"unfinished capture \(2 of 6 shards"):
        Activations.load(broken)
    with pytest.raises(InputError, match=r"other settings \(pooling 'mean' there, 'last' here\)"):
        capture_to_disk(model, prompts, broken, pooling="last", **options)
    with pytest.raises(InputError, match="other prompts"):
        capture_to_disk(model, prompts[:-1], broken, **options)
    counter = Interrupt(model, after=0)  # counts forward passes, never interrupts
    try:
        capture_to_disk(model, prompts, broken, **options)
    finally:
        counter.handle.remove()
    assert counter.calls == 7  # shards 2..5: 2 + 2 + 2 + 1 batches; shards 0 and 1 kept
    assert (broken / "meta.json").read_bytes() == (whole / "meta.json").read_bytes()
    assert _files(broken) == _files(whole)
    for name in _files(whole):
        assert (broken / name).read_bytes() == (whole / name).read_bytes(), name


def test_a_complete_artifact_is_reused_or_replaced(tmp_path, model):
    prompts = random_prompts(6, seed=7)
    out = capture_to_disk(model, prompts, tmp_path / "acts", shard_size=4, progress=False)
    counter = Interrupt(model, after=0)
    try:
        capture_to_disk(model, prompts, out, shard_size=4, progress=False)
        assert counter.calls == 0  # same command: nothing to compute
        capture_to_disk(model, prompts, out, shard_size=4, pooling="last", progress=False)
    finally:
        counter.handle.remove()
    assert Activations.load(out).pooling == "last"


def test_unusable_outputs_are_refused_before_any_work(tmp_path, model):
    prompts = random_prompts(3)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        capture_to_disk(model, prompts, tmp_path / "file", progress=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"holding other files \(mine.txt\)"):
        capture_to_disk(model, prompts, tmp_path / "notes", progress=False)
    assert _files(tmp_path / "notes") == ["mine.txt"]
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # root ignores permissions
        with pytest.raises(InputError, match="no write permission"):
            capture_to_disk(model, prompts, locked / "acts", progress=False)


def test_a_full_disk_is_a_user_error_and_keeps_the_finished_shards(tmp_path, model, monkeypatch):
    import errno

    written = []
    real = shards.atomic_write

    def fill_up(path, write):
        if Path(path).name.startswith("shard-") and len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        return real(path, write)

    monkeypatch.setattr(shards, "atomic_write", fill_up)
    with pytest.raises(InputError, match="No space left on device; make room"):
        capture_to_disk(model, random_prompts(9), tmp_path / "acts", shard_size=3, progress=False)
    assert [f for f in _files(tmp_path / "acts") if f.startswith("shard")] == [
        "shard-00000.safetensors"
    ]


def test_a_killed_command_line_capture_resumes(tmp_path, tiny_dir):
    """SIGKILL the `capture` command after a few shards, then run it again."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(random_prompts(120, seed=8)) + "\n")
    out = tmp_path / "killed"
    args = ["capture", "--prompts", str(prompts), "--model", str(tiny_dir), "--no-chat"]
    args += ["--shard-size", "1", "--batch-size", "1", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [PYTHON, "-m", "headpursuit", *args, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(list(out.glob("shard-*"))) < 3 and process.poll() is None:
        assert time.monotonic() < deadline, "the capture wrote no shards"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = len(list(out.glob("shard-*")))
    assert 3 <= kept < 120 and not json.loads((out / "meta.json").read_text())["complete"]
    runner = CliRunner()
    resumed = runner.invoke(app, [*args, "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    whole = runner.invoke(app, [*args, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    assert _files(out) == _files(tmp_path / "whole")
    for name in _files(out):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


# --- several processes ----------------------------------------------------------------------


def test_blocks_partition_the_heads():
    for n in (0, 1, 5, 270):
        for size in (1, 2, 3, 7):
            blocks = [distributed.block(n, rank, size) for rank in range(size)]
            assert [i for b in blocks for i in b] == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_two_processes_capture_and_rank_like_one(tmp_path, tiny_dir):
    """`accelerate launch` capture and `torchrun` rank on 2 CPU processes (gloo) == 1 process.

    accelerate's ``--cpu`` runs one process (its CPU multi-process mode needs MPI); with
    ``--multi_gpu`` it starts processes through torch.distributed.run, which works without
    GPUs, and each process falls back to the CPU.
    """
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(random_prompts(21, seed=9)) + "\n")
    concept = tmp_path / "red_blue.txt"
    concept.write_text("red\nblue\n")
    capture_args = ["capture", "--prompts", str(prompts), "--model", str(tiny_dir)]
    capture_args += ["--shard-size", "4", "--batch-size", "3", "--no-progress"]
    rank_args = [str(concept), "--model", str(tiny_dir), "--criterion", "specificity"]
    rank_args += ["--n-random", "2", "--n-atoms", "2"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    if sys.platform == "linux":  # gloo on the loopback: containers' host names may not resolve
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    bin_dir = Path(PYTHON).parent
    launched = subprocess.run(
        [str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "headpursuit", *capture_args, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "2 processes" in launched.stdout
    ranked = subprocess.run(
        [str(bin_dir / "torchrun"), "--nproc-per-node", "2", "-m", "headpursuit", "rank",
         str(tmp_path / "two"), *rank_args, "--out", str(tmp_path / "two.json")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ranked.returncode == 0, ranked.stderr[-3000:]
    runner = CliRunner()
    one = runner.invoke(app, [*capture_args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    one_rank = runner.invoke(
        app, ["rank", str(tmp_path / "one"), *rank_args, "--out", str(tmp_path / "one.json")]
    )
    assert one_rank.exit_code == 0, one_rank.output
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
    for name in _files(tmp_path / "one"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    two_ranking = json.loads((tmp_path / "two.json").read_text())
    one_ranking = json.loads((tmp_path / "one.json").read_text())
    assert two_ranking == one_ranking


def test_a_user_error_on_one_process_stops_every_process(monkeypatch):
    """agree(): the failing rank's error is raised on all ranks (gather simulated)."""
    from headpursuit.errors import DegenerateDataError

    monkeypatch.setattr(distributed, "world", lambda: distributed.World(0, 2, 0))
    monkeypatch.setattr(
        distributed, "all_gather", lambda obj: [obj, DegenerateDataError("rank 1 failed")]
    )
    with pytest.raises(DegenerateDataError, match="rank 1 failed"):
        distributed.agree(lambda: 42)


# --- reading a shard at a time ------------------------------------------------------------


def test_somp_over_shards_equals_somp_in_memory(tmp_path, model, monkeypatch):
    acts = capture(model, random_prompts(10, seed=10), progress=False)
    lazy = Activations.open(acts.save(tmp_path / "acts", shard_size=3))
    assert isinstance(lazy, ShardedActivations)
    sites = AttentionSites(model.model)
    dictionary = sites.unembedding()
    whole = head_somp(acts, sites, dictionary, 3)
    monkeypatch.setattr(head_ranking, "CODES_BUDGET", 1)  # one head per gather
    by_shard = head_somp(lazy, sites, dictionary, 3)
    assert torch.equal(by_shard.support, whole.support)
    torch.testing.assert_close(by_shard.evr, whole.evr, rtol=0, atol=1e-12)
    tokens = [5, 9, 40, 41]
    for criterion in ("logit_lens", "logit_lens_z"):
        a = rank_heads(acts, sites, tokens, criterion=criterion)
        b = rank_heads(lazy, sites, tokens, criterion=criterion)
        assert torch.equal(a.scores, b.scores), criterion
    assert lazy.prompts == acts.prompts


def test_constant_heads_are_found_shard_by_shard(tmp_path):
    """The one-pass spread over shards equals the textbook max |z - mean| / max |z|."""
    pooled = torch.randn(7, 2, 3, 4, generator=torch.Generator().manual_seed(3))
    pooled[:, 1, 2] = 0.25  # a constant head
    pooled[:, 0, 1] = 0.0  # a head that never writes
    acts = Activations(pooled, "tiny", "0" * 16, "mean", 8, [f"p{i}" for i in range(7)])
    lazy = Activations.open(acts.save(tmp_path / "acts", shard_size=3))
    z = pooled.double()
    deviation = (z - z.mean(0)).abs().amax(dim=(0, 3))
    scale = z.abs().amax(dim=(0, 3))
    expected = torch.where(scale > 0, deviation / scale.clamp_min(1e-300), 0.0)
    for source in (acts, lazy):
        torch.testing.assert_close(head_ranking.head_spread(source), expected, rtol=1e-12, atol=0)
        assert head_ranking.check_samples(source) == [Head(0, 1), Head(1, 2)]
    same = Activations(pooled[:1].repeat(5, 1, 1, 1), "tiny", "0" * 16, "mean", 8, list("abcde"))
    with pytest.raises(DegenerateDataError, match="no head's output varies"):
        head_ranking.check_samples(Activations.open(same.save(tmp_path / "same", shard_size=2)))


class Biggest(TorchDispatchMode):
    """Records the largest tensor any torch operation returns (factories included)."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(value, torch.Tensor):
                self.numel = max(self.numel, value.numel())
        return out


@pytest.mark.parametrize("to_disk", [False, True])
def test_a_model_with_non_finite_weights_is_refused_before_capture(tmp_path, to_disk):
    broken = tiny_model("llama_gqa")
    with torch.no_grad():  # one value-projection weight at inf: every head of layer 1 is NaN/inf
        broken.model.model.layers[1].self_attn.v_proj.weight[0, 0] = float("inf")
    prompts = random_prompts(5, seed=2)
    with pytest.raises(
        DegenerateDataError,
        match=r"Layer 1 .*NaN or inf weights \(self_attn.v_proj.weight\).*damaged",
    ):
        if to_disk:
            capture_to_disk(broken, prompts, tmp_path / "acts", shard_size=2, progress=False)
        else:
            capture(broken, prompts, progress=False)
    if to_disk:
        assert not list((tmp_path / "acts").glob("shard-*.safetensors"))


@pytest.mark.parametrize("to_disk", [False, True])
def test_head_outputs_that_overflow_name_the_prompt_and_keep_nothing(
    tmp_path, model, monkeypatch, to_disk
):
    capture_module = importlib.import_module("headpursuit.activations.capture")
    prompts = random_prompts(6, seed=4)
    run = capture_module._Runner.run

    def overflowing(self, rows):  # the healthy model, as if prompt 3 overflowed in float16
        values = run(self, rows)
        for i, row in enumerate(rows):
            if row == 3:
                values[i, 0, 0, 0] = float("inf")
        return values

    monkeypatch.setattr(capture_module._Runner, "run", overflowing)
    with pytest.raises(DegenerateDataError, match=r"prompt 3 .*NaN or inf.*--dtype"):
        if to_disk:
            capture_to_disk(model, prompts, tmp_path / "acts", shard_size=2, progress=False)
        else:
            capture(model, prompts, progress=False)
    if to_disk:
        assert sorted(p.name for p in (tmp_path / "acts").glob("shard-*")) == [
            "shard-00000.safetensors"
        ]


def test_disk_capture_never_holds_all_the_activations(tmp_path, model):
    prompts = random_prompts(600, seed=11)
    full = 600 * 3 * 6 * 12
    with Biggest() as in_memory:
        capture(model, prompts, batch_size=8, progress=False)
    assert in_memory.numel >= full  # the tracer sees the whole tensor when there is one
    with Biggest() as streamed:
        capture_to_disk(
            model, prompts, tmp_path / "acts", shard_size=8, batch_size=8, progress=False
        )
    assert streamed.numel < full / 8, (streamed.numel, full)


def test_prompts_over_100_mb_are_stored_and_read_back(tmp_path, model):
    """Six 17 MB prompts (truncated to 6 tokens for the model) round-trip through the artifact.

    The tokenizer sees only each prompt's first 200 characters: what is tested is the
    artifact, not the tokenizer's speed on 17 MB of text.
    """
    filler = "x" * (17 * 2**20)
    prompts = [f"w{i} w{i + 1} red {filler}" for i in range(6)]
    real = model.tokenizer

    class Clipped:
        def __getattr__(self, name):
            return getattr(real, name)

        def __setattr__(self, name, value):
            setattr(real, name, value)

        def __call__(self, texts, **kwargs):
            return real([t[:200] for t in texts], **kwargs)

    model.tokenizer = Clipped()
    try:
        out = capture_to_disk(model, prompts, tmp_path / "acts", max_length=6, progress=False)
    finally:
        model.tokenizer = real
    assert (out / "prompts.jsonl").stat().st_size > 100 * 10**6
    back = Activations.load(out)
    assert len(back.prompts) == 6
    assert all(a == b for a, b in zip(back.prompts, prompts, strict=True))
    assert torch.isfinite(back.pooled).all() and back.pooled.abs().sum() > 0
