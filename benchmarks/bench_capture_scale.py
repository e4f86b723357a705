"""Capture at scale on the real embedded SmolLM2-135M-Instruct: flat memory and two processes.

    nice -n 19 python benchmarks/bench_capture_scale.py            # 20,000 vs 1,000 prompts
    nice -n 19 python benchmarks/bench_capture_scale.py --quick    # 4,000 vs 1,000 prompts

Every capture is the `headpursuit capture` command in a fresh process, short prompts
(templates over the bundled word lists, numbered so that all are distinct), no chat
template, --no-progress. Prints progress, then as its last lines one ``name=value`` per
line:

* ``capture_rss_ratio``: peak resident memory (``ru_maxrss`` of the finished child, from
  ``os.wait4``) of a streamed capture of N prompts over that of 1,000 prompts. Flat
  memory means close to 1 (goal <= 1.2): the activations go to disk a shard at a time.
* ``two_process_identical``: whether a capture run as two processes (``torchrun
  --nproc-per-node 2``, gloo, one torch thread each) wrote byte-identical files (every
  shard, ``meta.json``, ``prompts.jsonl``) to one process.
* ``two_process_speedup``: wall time of the faster one-process command (one torch
  thread, or two) over the two-process one (the whole command: start, model load,
  capture, finalisation). On a busy machine two threads in one process can be much
  slower than one (every small operation waits for the other thread), hence both.

The memory runs use one torch thread (the thread count does not change what is held).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from headpursuit.ranking.concepts import builtin_words

TEMPLATES = ["Tell me about {}.", "Is {} a common word?", "Say {} twice."]


def short_prompts(n: int) -> list[str]:
    """n distinct short prompts (about 8 tokens), deterministic."""
    words = [
        w
        for name in ("countries", "colors", "nationalities", "months_weekdays", "numbers")
        for w in builtin_words(name)
    ]
    base = [t.format(w) for w, t in itertools.product(words, TEMPLATES)]
    return [f"{base[i % len(base)]} ({i // len(base)})" for i in range(n)]


def run_capture(
    prompts: Path, out: Path, *, threads: int, processes: int = 1
) -> tuple[float, float]:
    """Run `headpursuit capture` in a fresh process tree; (wall seconds, peak RSS in MiB).

    The peak RSS is the largest of the tree's processes (``ru_maxrss`` of the waited
    child, which includes its waited descendants).
    """
    args = ["capture", "--prompts", str(prompts), "--out", str(out), "--no-chat"]
    args += ["--no-progress", "--batch-size", "32", "--threads", str(threads)]
    if processes == 1:
        command = [sys.executable, "-m", "headpursuit", *args]
    else:
        torchrun = Path(sys.executable).parent / "torchrun"
        command = [str(torchrun), "--nproc-per-node", str(processes), "-m", "headpursuit", *args]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    log = out.parent / f"{out.name}.log"
    start = time.perf_counter()
    with open(log, "w") as handle:  # a file, not a pipe: a full pipe would block the child
        child = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above
    output = log.read_text()
    if child.returncode != 0:
        raise SystemExit(f"capture failed ({child.returncode}):\n{output[-3000:]}")
    print([line for line in output.splitlines() if line.startswith("Wrote")][-1], flush=True)
    return wall, usage.ru_maxrss / 1024  # Linux: kilobytes


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4,000 instead of 20,000 prompts")
    parser.add_argument("--two-process-prompts", type=int, default=2000)
    args = parser.parse_args()
    large = 4000 if args.quick else 20000
    work = Path(tempfile.mkdtemp(prefix="bench-capture-"))
    try:
        files = {}
        for n in sorted({1000, large, args.two_process_prompts}):
            files[n] = work / f"prompts_{n}.txt"
            files[n].write_text("\n".join(short_prompts(n)) + "\n", encoding="utf-8")

        print(f"capture of 1,000 and {large:,} prompts, each in a fresh process", flush=True)
        small_s, small_rss = run_capture(files[1000], work / "small", threads=1)
        large_s, large_rss = run_capture(files[large], work / "large", threads=1)
        shutil.rmtree(work / "small")
        shutil.rmtree(work / "large")

        n_two = args.two_process_prompts
        print(f"capture of {n_two:,} prompts: 1 process x 1 and 2 threads, 2 x 1", flush=True)
        one_1_s, _ = run_capture(files[n_two], work / "one_1", threads=1)
        one_2_s, _ = run_capture(files[n_two], work / "one_2", threads=2)
        two_s, _ = run_capture(files[n_two], work / "two", threads=1, processes=2)
        identical = same_files(work / "one_1", work / "two")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"n_small=1000\nn_large={large}")
    print(f"capture_small_s={small_s:.1f}\ncapture_large_s={large_s:.1f}")
    print(f"capture_large_prompts_per_s={large / large_s:.1f}")
    print(f"capture_rss_small_mib={small_rss:.0f}\ncapture_rss_large_mib={large_rss:.0f}")
    print(f"capture_rss_ratio={large_rss / small_rss:.3f}")
    print(f"two_process_prompts={n_two}")
    print(f"one_process_1_thread_s={one_1_s:.1f}\none_process_2_threads_s={one_2_s:.1f}")
    print(f"two_process_s={two_s:.1f}")
    print(f"two_process_identical={'true' if identical else 'false'}")
    print(f"two_process_speedup={min(one_1_s, one_2_s) / two_s:.2f}")


if __name__ == "__main__":
    main()
