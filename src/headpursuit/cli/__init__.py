"""The ``headpursuit`` command line: the pipeline commands, the demo, and the experiments.

Every command shares the options of :mod:`headpursuit.cli.common` (model, dtype, device,
output, seed, progress) and its error contract (one line and status 2 for a user error).
"""

from . import demo, language, pipeline, vision
from .common import app

__all__ = ["app", "demo", "language", "pipeline", "vision"]
