"""Interruptions against real processes: Ctrl-C and SIGTERM at start-up and during a save end
with one line and leave no file of ours; what SIGKILL leaves, the next run removes (and
never another live process's work); two first runs on an empty model cache both succeed.

The processes are real (``python -m headpursuit.cli`` or tests/interrupt_child.py, which
runs the real CLI with its renames held at a chosen moment) and the signals real.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import headpursuit
from conftest import random_prompts, tiny_text_model
from headpursuit import Activations, ArtifactError
from headpursuit.cli import app
from headpursuit.io import TEMP_PREFIX, atomic_write, is_stale_temp, remove_stale_temp
from headpursuit.models import loading
from headpursuit.models.zoo import convert_gguf, gguf_cache_path
from tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and /proc")

CHILD = Path(__file__).parent / "interrupt_child.py"
SRC = Path(headpursuit.__file__).parent.parent
WAIT = 300  # seconds; generous for a loaded CI machine, never reached when things work


def environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _default_sigint() -> None:
    # A test run started in the background by a non-interactive shell (`make test &`, a CI
    # runner) inherits SIGINT ignored, and Python then leaves it ignored in the child, as
    # it should for a background job. The child plays a foreground command that gets Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        env=environment(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    """Poll ``condition`` until true; fail with the child's output if it exits first."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the child exited ({process.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=WAIT)
    return process.returncode, err


def ours(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


def handles_sigterm(pid: int) -> bool:
    """Whether the process has installed a SIGTERM handler (bit 15 of SigCgt in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(random_prompts(6)) + "\n")
    return path


SIGNALS = [(signal.SIGINT, 130, "Interrupted"), (signal.SIGTERM, 143, "Terminated")]


@pytest.mark.parametrize(("signum", "code", "word"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_signal_during_startup_is_one_line(tmp_path, prompts, signum, code, word):
    """Sent while the command line imports torch: no traceback, no file."""
    out = tmp_path / "out"
    args = ["capture", "--prompts", str(prompts), "--out", str(out / "acts.safetensors")]
    child = start("-m", "headpursuit.cli", *args)
    wait_for(lambda: handles_sigterm(child.pid), child, "the CLI installed its handlers")
    child.send_signal(signum)
    status, err = finish(child)
    assert status == code, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()][-1].startswith(word), err
    assert not out.exists()


@pytest.mark.parametrize(("signum", "code", "word"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_save_leaves_no_partial_file(
    tmp_path, prompts, monkeypatch, signum, code, word
):
    """Sent when a shard of the activations is written in full to its temporary file, just
    before the rename: the temporary file is removed, the shard never appears, the artifact
    stays unfinished (refused by readers), and the same command finishes it."""
    out, ready = tmp_path / "acts", tmp_path / "ready"
    args = ["capture", "--prompts", str(prompts), "--out", str(out), "--shard-size", "2"]
    hold = ["--hold", str(ready), "--hold-name", "shard-*"]
    child = start(str(CHILD), "cli", "--tiny-model", *hold, "--", *args, "--no-progress")
    wait_for(ready.exists, child, "the save")
    assert len(ours(out)) == 1  # the whole temporary shard file, about to be renamed
    child.send_signal(signum)
    status, err = finish(child)
    assert status == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"{word}; the finished shards in {out} are kept: run the same command again to continue."
    )
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "prompts.jsonl"]
    with pytest.raises(ArtifactError, match=r"unfinished capture \(0 of 3 shards"):
        Activations.load(out)

    tiny = tiny_text_model("llama_gqa")
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: tiny)
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert Activations.load(out).n_samples == 6
    assert ours(out) == []


def test_sigkill_leftover_is_removed_by_the_next_run(tmp_path, prompts, monkeypatch):
    out = tmp_path / "out"
    killed = start(str(CHILD), "hold-file", str(out / "acts.safetensors"), str(tmp_path / "r1"))
    wait_for((tmp_path / "r1").exists, killed, "the write")
    killed.kill()
    killed.wait()
    leftover = ours(out)
    assert len(leftover) == 1 and is_stale_temp(leftover[0])
    # A live process's temporary file in the same folder must survive the cleanup.
    alive = start(str(CHILD), "hold-file", str(out / "other.bin"), str(tmp_path / "r2"))
    try:
        wait_for((tmp_path / "r2").exists, alive, "the second write")
        live = sorted(set(ours(out)) - set(leftover))
        assert len(live) == 1 and not is_stale_temp(live[0])

        # The next run: a capture writing into the same folder.
        tiny = tiny_text_model("llama_gqa")
        monkeypatch.setattr(loading, "load_model", lambda *a, **k: tiny)
        target = out / "acts.safetensors"
        args = ["capture", "--prompts", str(prompts), "--out", str(target), "--no-progress"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert ours(out) == live  # the dead run's file is gone, the live one's kept
        assert Activations.load(target).n_samples == 6
    finally:
        alive.kill()
        alive.wait()
    assert remove_stale_temp(out) == [out / live[0]]  # now its maker is gone too
    assert ours(out) == []


def machine_and_boot(folder: Path) -> tuple[str, str]:
    """This process's ``<machine>`` and ``<boot>`` parts, read off a real temporary name."""
    names: list[str] = []
    atomic_write(folder / "probe", lambda tmp: names.append(Path(tmp).name))
    (folder / "probe").unlink()
    pid, machine, boot = names[0][len(TEMP_PREFIX) :].split("-")[:3]
    assert pid == str(os.getpid())
    return machine, boot


def test_cleanup_never_touches_what_it_cannot_prove_stale(tmp_path):
    machine, boot = machine_and_boot(tmp_path)
    names = [
        f"{TEMP_PREFIX}4000000-0badc0de-{boot}-abc.acts",  # another machine's (or container's)
        f"{TEMP_PREFIX}{os.getpid()}-{machine}-{boot}-abc.acts",  # a live process's (ours)
        f"{TEMP_PREFIX}{os.getppid()}-{machine}-{boot}-abc.acts",  # a live process's
        f"{TEMP_PREFIX}acts.safetensors.k2j3h4",  # the old form, without its maker
        "acts.safetensors.partial",  # not ours at all
    ]
    for name in names:
        (tmp_path / name).write_text("x")
    assert remove_stale_temp(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_an_earlier_boot_leftover_is_stale_whatever_its_pid(tmp_path):
    machine, boot = machine_and_boot(tmp_path)
    other_boot = "00000000" if boot != "00000000" else "11111111"
    name = f"{TEMP_PREFIX}{os.getpid()}-{machine}-{other_boot}-abc.acts"
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text("{}")
    assert remove_stale_temp(tmp_path) == [tmp_path / name]
    assert list(tmp_path.iterdir()) == []


def test_killed_conversion_leaves_staging_that_the_next_conversion_removes(
    tmp_path, prompts, monkeypatch
):
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    cache, ready = tmp_path / "cache", tmp_path / "ready"
    args = ["capture", "--prompts", str(prompts), "--model", str(gguf), "--out", "x.safetensors"]
    child = start(
        str(CHILD), "cli", "--hold", str(ready), "--", *args, HEADPURSUIT_CACHE=str(cache)
    )
    wait_for(ready.exists, child, "the converted checkpoint's rename")
    child.kill()
    child.wait()
    staging = ours(cache)
    assert len(staging) == 1 and (cache / staging[0] / "config.json").is_file()
    monkeypatch.setenv("HEADPURSUIT_CACHE", str(cache))
    target = convert_gguf(gguf)
    assert sorted(p.name for p in cache.iterdir()) == [target.name]


def test_two_first_runs_on_an_empty_cache_both_succeed(tmp_path, prompts):
    """Both convert in full and rename at the same moment: one directory wins, the other
    run discards its copy and goes on with the winner's."""
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()

    def run(i: int) -> subprocess.Popen:
        out = str(tmp_path / f"acts{i}.safetensors")
        args = ["capture", "--prompts", str(prompts), "--model", str(gguf), "--out", out]
        hold = ["--barrier", str(barrier), "2"]
        return start(str(CHILD), "cli", *hold, "--", *args, HEADPURSUIT_CACHE=str(cache))

    children = [run(0), run(1)]
    results = [finish(child) for child in children]
    assert [status for status, _ in results] == [0, 0], results
    assert len(list(barrier.iterdir())) == 2  # both reached the rename: a real race
    assert [p.name for p in cache.iterdir()] == [gguf_cache_path(gguf).name]
    first, second = (Activations.load(tmp_path / f"acts{i}.safetensors") for i in range(2))
    assert first.fingerprint == second.fingerprint
    assert (first.pooled == second.pooled).all()
