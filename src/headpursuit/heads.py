"""Attention heads as values: one :class:`Head` type, one text form (``"L3H5"``), bounds checks.

Every function of the package that takes heads accepts :class:`Head` objects, ``(layer,
head)`` tuples or ``"L3H5"`` strings; :func:`as_heads` turns them into :class:`Head` at the
edge. Every artifact writes heads in the text form and reads them with :func:`parse_head`.
Layers and heads are 0-indexed.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from typing import NamedTuple

from .errors import InputError

_HEAD_TEXT = re.compile(r"^\s*(?:L(\d+)H(\d+)|(\d+)\.(\d+))\s*$", re.IGNORECASE)


class Head(NamedTuple):
    """An attention head: 0-indexed layer and head. ``str(Head(3, 5)) == "L3H5"``."""

    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"


HeadLike = Head | tuple[int, int] | str


def parse_head(text: str) -> Head:
    """``"L12H3"`` (or ``"12.3"``) -> ``Head(12, 3)``.

    Raises:
        InputError: for anything else, negative numbers included.
    """
    match = _HEAD_TEXT.match(text) if isinstance(text, str) else None
    if match is None:
        raise InputError(
            f"Cannot read head {text!r}; write it as L12H3 (0-indexed layer and head)."
        )
    numbers = [int(g) for g in match.groups() if g is not None]
    return Head(numbers[0], numbers[1])


def as_head(value: HeadLike) -> Head:
    """A :class:`Head` from a Head, a ``(layer, head)`` pair of non-negative ints, or ``"L3H5"``."""
    if isinstance(value, str):
        return parse_head(value)
    if isinstance(value, tuple) and len(value) == 2:
        layer, head = _index(value[0]), _index(value[1])
        if layer is not None and head is not None:
            return Head(layer, head)
    raise InputError(
        f"Cannot read head {value!r}; give Head(layer, head), a (layer, head) pair of "
        "non-negative integers, or a string like 'L3H5'."
    )


def _index(value: object) -> int | None:
    """``value`` as a non-negative int (Python, NumPy or 0-d torch integer), else ``None``."""
    if isinstance(value, bool):
        return None
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None
    return number if number >= 0 else None


def as_heads(values: Iterable[HeadLike]) -> list[Head]:
    """Heads in the given order, duplicates dropped (see :func:`as_head`)."""
    return list(dict.fromkeys(as_head(value) for value in values))


def check_heads(heads: Iterable[Head], n_layers: int, n_heads: int) -> None:
    """Raise :class:`InputError` naming the first head outside ``n_layers x n_heads``."""
    for head in heads:
        if not (0 <= head.layer < n_layers and 0 <= head.head < n_heads):
            raise InputError(
                f"Head {head} is outside this model ({n_layers} layers x {n_heads} heads, "
                f"0-indexed: L0H0 .. L{n_layers - 1}H{n_heads - 1})."
            )


def heads_to_text(heads: Iterable[Head]) -> list[str]:
    """``[Head(1, 2), ...]`` -> ``["L1H2", ...]`` (the one serialised form)."""
    return [str(head) for head in heads]
