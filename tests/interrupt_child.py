"""A child process for tests/test_interrupts.py: hold a write open, or run the real CLI with
its renames of our temporary files held at a chosen moment, so that signals can be sent
at that moment.

    python interrupt_child.py hold-file TARGET READY     # atomic_write, held inside write()
    python interrupt_child.py hold-dir TARGET READY      # atomic_directory, held inside fill()
    python interrupt_child.py cli [--tiny-model] [--hold READY | --barrier DIR N] -- ARGS...

``--hold`` holds the first rename of a temporary file or staging directory of ours (the
temporary is complete then: the moment a save is most exposed) after creating READY;
``--barrier`` makes every rename of ours wait until N processes have reached one.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HOLD_SECONDS = 600


def hold(ready: str) -> None:
    Path(ready).touch()
    time.sleep(HOLD_SECONDS)


def hold_file(target: str, ready: str) -> None:
    from headpursuit.io import atomic_write

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(b"x" * 2**20)
        hold(ready)

    atomic_write(target, write)


def hold_dir(target: str, ready: str) -> None:
    from headpursuit.io import atomic_directory

    def fill(staging: Path) -> None:
        (staging / "weights.bin").write_bytes(b"x" * 2**20)
        hold(ready)

    atomic_directory(target, fill)


def run_cli(options: list[str], args: list[str]) -> None:
    from headpursuit.io import TEMP_PREFIX

    if "--tiny-model" in options:
        sys.path.insert(0, str(Path(__file__).parent))
        from conftest import tiny_text_model
        from headpursuit.models import loading

        model = tiny_text_model("llama_gqa")
        loading.load_model = lambda *a, **k: model
    gate = None
    if "--hold" in options:
        ready = options[options.index("--hold") + 1]

        def gate() -> None:
            hold(ready)

    if "--barrier" in options:
        folder = Path(options[options.index("--barrier") + 1])
        count = int(options[options.index("--barrier") + 2])

        def gate() -> None:
            (folder / str(os.getpid())).touch()
            deadline = time.monotonic() + HOLD_SECONDS
            while len(list(folder.iterdir())) < count and time.monotonic() < deadline:
                time.sleep(0.05)

    if gate is not None:
        for name in ("replace", "rename"):
            original = getattr(os, name)

            def gated(src, dst, *a, _original=original, **k):
                if Path(src).name.startswith(TEMP_PREFIX):
                    gate()
                return _original(src, dst, *a, **k)

            setattr(os, name, gated)
    from headpursuit.cli import main

    sys.argv = ["headpursuit", *args]
    main()


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "hold-file":
        hold_file(*rest)
    elif mode == "hold-dir":
        hold_dir(*rest)
    elif mode == "cli":
        split = rest.index("--")
        run_cli(rest[:split], rest[split + 1 :])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
