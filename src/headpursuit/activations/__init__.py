"""The activations stage: prompts in, pooled head-space outputs out (and on disk).

* :mod:`~headpursuit.activations.prompts` -- prompt sources and chat formatting.
* :mod:`~headpursuit.activations.capture` -- hooks that pool each head's ``z``.
* :mod:`~headpursuit.activations.store` -- the :class:`Activations` artifact.
* :mod:`~headpursuit.activations.shards` -- its on-disk format: a directory of shards.
"""

from .capture import POOLINGS, capture, capture_to_disk
from .prompts import bundled_prompts, format_prompts, read_prompts
from .shards import ShardedActivations
from .store import Activations

__all__ = [
    "POOLINGS",
    "Activations",
    "ShardedActivations",
    "bundled_prompts",
    "capture",
    "capture_to_disk",
    "format_prompts",
    "read_prompts",
]
