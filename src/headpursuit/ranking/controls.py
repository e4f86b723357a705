"""Random control heads matched to a selection, and the overlap of head sets.

A control set has the same number of heads in each layer as the selected set and is
disjoint from it, so that an effect of the selected heads can be told from an effect of
intervening on that many heads at those depths. When a layer has too few other heads,
the missing ones are borrowed from the nearest layers and the draw says so.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InputError
from ..heads import Head, HeadLike, as_heads, check_heads


@dataclass(frozen=True)
class ControlDraw:
    """One matched control set.

    Attributes:
        heads: the control heads (same per-layer counts as the selection where possible).
        borrowed: ``{layer: count}`` heads that layer lacked and that came from the
            nearest layers instead (empty when every layer could be matched).
    """

    heads: list[Head]
    borrowed: dict[int, int]


def draw_controls(
    selected: Iterable[HeadLike],
    n_layers: int,
    n_heads: int,
    *,
    seed: int = 0,
    borrow: bool = True,
) -> ControlDraw:
    """Random heads with the same count per layer as ``selected``, disjoint from it.

    Args:
        seed: seeds the draw (Python's ``random.Random``).
        borrow: when a layer has fewer unselected heads than selected ones, take the
            missing heads from the nearest layers (recorded in ``borrowed``); with
            ``False``, refuse instead.
    """
    chosen = as_heads(selected)
    if not chosen:
        raise InputError("No selected heads to match controls to.")
    check_heads(chosen, n_layers, n_heads)
    taken = set(chosen)
    rng = random.Random(seed)
    controls: list[Head] = []
    missing: list[int] = []
    for layer, count in sorted(Counter(h.layer for h in chosen).items()):
        free = [Head(layer, h) for h in range(n_heads) if Head(layer, h) not in taken]
        if len(free) < count and not borrow:
            raise InputError(
                f"Layer {layer} has {count} selected heads and only {len(free)} others: no "
                "disjoint control with the same per-layer counts exists. Use a smaller k."
            )
        picked = rng.sample(free, min(count, len(free)))
        controls.extend(picked)
        taken.update(picked)
        missing.extend([layer] * (count - len(picked)))
    borrowed = Counter(missing)
    for layer in missing:
        free = [
            Head(l, h) for l in range(n_layers) for h in range(n_heads) if Head(l, h) not in taken
        ]
        if not free:
            raise InputError("Not enough heads left in the model for a disjoint control set.")
        nearest = min(abs(h.layer - layer) for h in free)
        choice = rng.choice([h for h in free if abs(h.layer - layer) == nearest])
        controls.append(choice)
        taken.add(choice)
    return ControlDraw(controls, dict(borrowed))


def matched_controls(
    selected: Iterable[HeadLike],
    n_layers: int,
    n_heads: int,
    *,
    seed: int = 0,
    borrow: bool = False,
) -> list[Head]:
    """The heads of :func:`draw_controls` (by default refusing when a layer cannot be matched)."""
    return draw_controls(selected, n_layers, n_heads, seed=seed, borrow=borrow).heads


def jaccard(first: Iterable[HeadLike], second: Iterable[HeadLike]) -> float:
    """Jaccard overlap ``|A ∩ B| / |A ∪ B|`` of two head sets (1.0 for two empty sets)."""
    a, b = set(as_heads(first)), set(as_heads(second))
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def random_jaccard(
    n_total: int, size_a: int, size_b: int, *, n_draws: int = 10_000, seed: int = 0
) -> list[float]:
    """Jaccard overlaps of ``n_draws`` pairs of random head sets of the given sizes.

    The null distribution against which the overlap of two selected sets is read.
    """
    if not (0 < size_a <= n_total and 0 < size_b <= n_total):
        raise InputError(f"Set sizes {size_a}, {size_b} must lie in 1..{n_total}.")
    rng = random.Random(seed)
    universe = range(n_total)
    values = []
    for _ in range(n_draws):
        a, b = set(rng.sample(universe, size_a)), set(rng.sample(universe, size_b))
        values.append(len(a & b) / len(a | b))
    return values
