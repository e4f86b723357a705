"""Several processes on one job: which one am I, and how the processes share small results.

headpursuit runs one process per GPU (or per CPU worker) when a launcher starts it:
``accelerate launch`` or ``torchrun`` set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``, and :func:`init_from_env` joins the process group
with the gloo backend. Only small Python objects travel between the processes (plans,
checksums, SOMP results, errors); activations go through the file system, so gloo on
the CPU is enough even when every process drives a GPU.

Without a launcher there is one process and everything here is a no-op: :func:`world`
is rank 0 of 1, :func:`barrier` returns at once, :func:`all_gather` returns ``[obj]``.

A :class:`~headpursuit.errors.UserError` raised on one process must stop all of them with
the same line, not leave the others waiting at the next collective: :func:`agree` and
:func:`on_main` catch it, share it, and raise it on every process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from .errors import InputError, UserError

T = TypeVar("T")

#: How long a process waits for the others at a collective. Captures can leave one
#: process a shard behind the others for a long time; a dead process is noticed by the
#: launcher, which stops the rest.
TIMEOUT = timedelta(hours=24)
SHUTDOWN_WAIT = timedelta(seconds=60)


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes shared files and prints results."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError as error:
        raise InputError(f"Environment variable {name}={text!r} is not an integer.") from error


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def init_from_env() -> World:
    """Join the launcher's process group (gloo), or stay a single process without one.

    Safe to call more than once; a group the caller initialised already is used as it is.
    """
    size = _env_int("WORLD_SIZE", 1)
    if _initialized() or size <= 1:
        return world()
    import torch.distributed as dist

    if not dist.is_available():
        raise InputError("This torch build has no torch.distributed; run one process.")
    dist.init_process_group("gloo", timeout=TIMEOUT)
    atexit.register(_shutdown)
    return world()


def _shutdown() -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    # Leave together: a rank that tears its gloo pairs down while another rank is still
    # finishing its last collective makes that rank abort ("terminate called without an
    # active exception", seen on a saturated machine). A rank that never arrives (it
    # crashed) must not keep the others here: the wait is bounded and its failure ignored.
    with contextlib.suppress(RuntimeError):
        dist.monitored_barrier(timeout=SHUTDOWN_WAIT)
    dist.destroy_process_group()


def world() -> World:
    """This process's :class:`World` (rank 0 of 1 without an initialised process group)."""
    if not _initialized():
        return World()
    import torch.distributed as dist

    return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))


def barrier() -> None:
    """Wait until every process gets here."""
    if world().size > 1:
        import torch.distributed as dist

        dist.barrier()


def all_gather(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order, on every process."""
    current = world()
    if current.size == 1:
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] = [None] * current.size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable), on every process."""
    if world().size == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def agree(function: Callable[[], T]) -> T:
    """Run ``function`` on every process; if it raised a user error anywhere, raise it everywhere.

    The first failing rank's error is raised on all processes, so every process stops
    with the same one-line message instead of waiting for a peer that gave up.
    """
    result: Any = None
    error: UserError | None = None
    try:
        result = function()
    except UserError as caught:
        if world().size == 1:
            raise
        error = caught
    failures = [e for e in all_gather(error) if e is not None]
    if failures:
        raise failures[0]
    return result


def on_main(function: Callable[[], T]) -> T:
    """Run ``function`` on rank 0 only and hand its result (or its user error) to every process."""
    if world().size == 1:
        return function()
    outcome: tuple[bool, Any] = (True, None)
    if world().is_main:
        try:
            outcome = (True, function())
        except UserError as caught:
            outcome = (False, caught)
    ok, value = broadcast(outcome)
    if not ok:
        raise value
    return value


def block(n: int, rank: int, size: int) -> range:
    """The contiguous block of ``range(n)`` that process ``rank`` of ``size`` takes.

    Blocks differ in length by at most one and cover ``range(n)`` in rank order.
    """
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))
