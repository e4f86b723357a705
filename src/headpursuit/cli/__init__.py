"""The ``headpursuit`` command line: the pipeline commands, the demo, and the experiments.

Every command shares the options of :mod:`headpursuit.cli.common` (model, dtype, device,
output, seed, progress) and its error contract (one line and status 2 for a user error).

:func:`main` is the console script. It installs the SIGTERM handler and catches Ctrl-C
before importing the commands (which import torch), so that an interrupt at any moment,
start-up included, ends with one line and status 130 / 143 instead of a traceback.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any

from ..errors import Terminated, raise_terminated

#: The command modules; importing them registers their commands on ``common.app``.
_COMMAND_MODULES = ("common", "demo", "language", "pipeline", "vision")


def _app() -> Any:
    for name in _COMMAND_MODULES:
        importlib.import_module(f".{name}", __name__)
    return sys.modules[f"{__name__}.common"].app


def _exit_now(status: int) -> None:
    """Exit with ``status`` at once, after flushing the standard streams.

    Not ``sys.exit``: when Ctrl-C lands while an extension runs Python code for its import
    (torch does), CPython (3.11 at least) records the KeyboardInterrupt as unhandled and,
    after a clean ``sys.exit(130)``, ends the process with SIGINT instead (status -2, seen
    about once in four runs of the start-up interrupt test). Nothing is open for writing
    yet at this point, so skipping the interpreter's shutdown loses nothing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main() -> None:
    """Run the command line (the ``headpursuit`` console script and ``python -m headpursuit.cli``)."""
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        # The app handles interrupts inside its commands; this, the ones around them.
        _app()(prog_name="headpursuit")
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        _exit_now(130)
    except Terminated:
        print("Terminated.", file=sys.stderr)
        sys.exit(143)


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app()
    if name in _COMMAND_MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
