"""The errors headpursuit raises on purpose, and the line between a user's mistake and a bug.

Every error a user can fix derives from :class:`UserError`: the command line prints its
message as one line and exits with status 2. Anything else that escapes is a bug in
headpursuit (or in a library under it): the command line prints the traceback, asks for a
report, and exits with status 1. :class:`UserError` derives from ``ValueError`` so that
API callers who catch ``ValueError`` keep working.

:class:`Terminated` is neither: the command line raises it in the main thread when the
process receives SIGTERM, so that the same cleanup runs as for Ctrl-C (``KeyboardInterrupt``).
"""

from __future__ import annotations


class UserError(ValueError):
    """Something the user can fix; the message says what was wrong and how to fix it."""


class InputError(UserError):
    """An argument, option or input file is out of range, of the wrong type, or missing."""


class ArtifactError(UserError):
    """A file is not the artifact it should be, is damaged, or belongs to another model."""


class ConceptError(UserError):
    """A concept name or word list is unusable."""


class ModelLoadError(UserError):
    """A model could not be found or loaded."""


class UnsupportedArchitectureError(UserError):
    """headpursuit cannot give exact per-head contributions for this model.

    ``reason`` is a one-line summary (used in the architecture table); the message also
    says what was checked and how to register an override.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class DegenerateDataError(UserError):
    """The data cannot give a meaningful result (e.g. fewer than two distinct samples)."""


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (see :func:`raise_terminated`).

    A ``BaseException``, like ``KeyboardInterrupt``, so that ``except Exception`` blocks do
    not swallow it and every ``finally`` / ``except BaseException`` cleanup runs.
    """


def raise_terminated(signum: int, frame: object) -> None:
    """A signal handler that turns SIGTERM into :class:`Terminated`."""
    raise Terminated()
