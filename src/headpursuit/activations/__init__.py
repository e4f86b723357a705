"""The activations stage: prompts in, pooled head-space outputs out (and on disk).

* :mod:`~headpursuit.activations.prompts` -- prompt sources and chat formatting.
* :mod:`~headpursuit.activations.capture` -- hooks that pool each head's ``z``.
* :mod:`~headpursuit.activations.store` -- the :class:`Activations` artifact.
"""

from .capture import POOLINGS, capture
from .prompts import bundled_prompts, format_prompts, read_prompts
from .store import Activations

__all__ = [
    "POOLINGS",
    "Activations",
    "bundled_prompts",
    "capture",
    "format_prompts",
    "read_prompts",
]
