"""The ranking artifact: every head scored for one concept, and SOMP run per head.

A :class:`HeadRanking` holds one score per head (``[n_layers, n_heads]``, higher = more
specialised) under a named criterion, the concept-restricted SOMP EVR and support when
they were computed, any further per-head tables the criterion produced (e.g. the mean EVR
of the random dictionaries), and an optional layer window outside which heads are never
chosen. :func:`head_somp` runs SOMP on heads' residual contributions in head space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..activations.store import Activations
from ..errors import DegenerateDataError, InputError
from ..heads import Head, HeadLike, as_heads, check_heads
from ..io import MAX_INDEX, Fields, JsonArtifact, register_artifact
from ..models.architectures import AttentionSites
from .pursuit import SOMPResult, somp_factored


def head_somp(
    activations: Activations,
    sites: AttentionSites,
    dictionary: torch.Tensor,
    n_atoms: int,
    *,
    center: bool = True,
    heads: Sequence[HeadLike] | None = None,
    progress: bool = False,
) -> SOMPResult:
    """SOMP on every head's (or the given heads') contributions, computed in head space.

    Args:
        activations: pooled ``z`` of shape ``[n, n_layers, n_heads, head_dim]``.
        dictionary: ``[v, d_model]`` atoms (e.g. rows of the unembedding).
        heads: the heads (default: all, layer-major).

    Returns:
        :class:`SOMPResult` with one row per head, in ``heads`` order.
    """
    activations.check_model(sites)
    if heads is None:
        chosen = [Head(l, h) for l in range(sites.n_layers) for h in range(sites.n_heads)]
    else:
        chosen = as_heads(heads)
        check_heads(chosen, sites.n_layers, sites.n_heads)
    maps_by_layer = {layer: sites.head_matrices(layer) for layer in {h.layer for h in chosen}}
    codes = torch.stack([activations.pooled[:, h.layer, h.head] for h in chosen])
    maps = torch.stack([maps_by_layer[h.layer][h.head] for h in chosen])
    return somp_factored(codes, maps, dictionary, n_atoms, center=center, progress=progress)


#: A head whose pooled output strays from its mean over the samples by at most this
#: fraction of its largest value is constant. Round-off between rows of one float32 batch
#: is about 2e-7 of the values; the least varying head of SmolLM2-135M over 512 prompts
#: strays by 3e-3.
CONSTANT_RTOL = 1e-5


def head_spread(activations: Activations) -> torch.Tensor:
    """``[n_layers, n_heads]``: each head's largest deviation from its mean over samples,
    relative to its largest absolute value (0 for a constant or all-zero head)."""
    pooled = activations.pooled
    spread = torch.zeros(activations.n_layers, activations.n_heads, dtype=torch.float64)
    for layer in range(activations.n_layers):  # one layer at a time bounds the memory
        z = pooled[:, layer].double()  # [n, H, head_dim]
        deviation = (z - z.mean(0)).abs().amax(dim=(0, 2))
        scale = z.abs().amax(dim=(0, 2))
        spread[layer] = torch.where(scale > 0, deviation / scale.clamp_min(1e-300), 0.0)
    return spread


def constant_heads(activations: Activations, rtol: float = CONSTANT_RTOL) -> list[Head]:
    """The heads whose pooled output does not vary over the samples (see :data:`CONSTANT_RTOL`).

    Centring makes such a head's signal zero, so its EVR is 0 by convention and means
    nothing, and SOMP has nothing to explain.
    """
    spread = head_spread(activations)
    return [Head(l, h) for l, h in (spread <= rtol).nonzero().tolist()]


def check_samples(activations: Activations) -> list[Head]:
    """Refuse activations from which no head can be ranked or explained; return the constant heads.

    Raises :class:`DegenerateDataError` for fewer than two samples, fewer than two distinct
    prompts (when the prompts are stored), or every head constant over the samples
    (duplicates of one prompt differ only by round-off, which exact comparison misses).
    """
    n = activations.n_samples
    distinct = len(set(activations.prompts)) if activations.prompts else n
    constant = constant_heads(activations) if n >= 2 and distinct >= 2 else []
    if n < 2 or distinct < 2 or len(constant) == activations.n_layers * activations.n_heads:
        raise DegenerateDataError(
            f"These activations hold {n} sample(s) of {distinct} distinct prompt(s) and no "
            "head's output varies over them (one prompt, duplicates, or constant data), so "
            "every head's centred output is zero and no head can be ranked or explained. "
            "Capture at least two distinct prompts."
        )
    return constant


def check_window(layers: tuple[int, int] | None, n_layers: int) -> tuple[int, int] | None:
    """Validate a layer window ``(first, last)`` (inclusive) against ``n_layers``."""
    if layers is None:
        return None
    first, last = (int(x) for x in layers)
    if not 0 <= first <= last < n_layers:
        raise InputError(
            f"Layer window {first}:{last} is not inside 0:{n_layers - 1} (first <= last)."
        )
    return first, last


@register_artifact
@dataclass
class HeadRanking(JsonArtifact):
    """Heads scored for one concept.

    Attributes:
        concept: the concept's name.
        criterion: how ``scores`` were computed ("evr", "specificity", "logit_lens",
            "logit_lens_z"; see :mod:`headpursuit.ranking.criteria`).
        scores: ``[n_layers, n_heads]`` float64, higher = more specialised.
        evr: ``[n_layers, n_heads]`` concept-restricted SOMP EVR with ``n_atoms`` atoms
            (NaN where not computed).
        support: ``[n_layers, n_heads, n_atoms]`` the concept tokens SOMP chose per head.
        n_atoms: atoms per head (0 when SOMP was not run).
        model_id, fingerprint: the model the activations came from.
        token_ids: the concept's dictionary rows.
        layers: optional inclusive layer window ``(first, last)``; heads outside it are
            never chosen by :meth:`order` / :meth:`top`.
        tables: further ``[n_layers, n_heads]`` tables by name (e.g. ``"random_evr"``).
        settings: the criterion's settings (e.g. ``n_random``, ``seed``).
    """

    kind = "headpursuit.ranking"
    made_by = "headpursuit rank"
    schema_version = 2

    concept: str
    criterion: str
    scores: torch.Tensor
    evr: torch.Tensor
    support: torch.Tensor
    n_atoms: int
    model_id: str
    fingerprint: str
    token_ids: list[int] = field(default_factory=list)
    layers: tuple[int, int] | None = None
    tables: dict[str, torch.Tensor] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.scores.shape)  # type: ignore[return-value]

    @property
    def n_heads_total(self) -> int:
        return self.scores.numel()

    def eligible(self) -> list[Head]:
        """The heads inside the layer window (all heads without one)."""
        n_layers, n_heads = self.shape
        first, last = self.layers if self.layers is not None else (0, n_layers - 1)
        return [Head(l, h) for l in range(first, last + 1) for h in range(n_heads)]

    def order(self) -> list[Head]:
        """Heads inside the window, best first (ties broken by layer, then head)."""
        return sorted(self.eligible(), key=lambda h: (-float(self.scores[h]), h.layer, h.head))

    def top(self, k: int) -> list[Head]:
        """The ``k`` best heads inside the window."""
        available = len(self.eligible())
        if not 1 <= k <= available:
            where = "" if self.layers is None else f" in layers {self.layers[0]}:{self.layers[1]}"
            raise InputError(f"k must be between 1 and {available} (the heads{where}), got {k}.")
        return self.order()[:k]

    def with_window(self, layers: tuple[int, int] | None) -> HeadRanking:
        """A copy whose order is restricted to the inclusive layer window ``layers``."""
        return replace(self, layers=check_window(layers, self.shape[0]))

    def rank_of(self, head: HeadLike) -> int | None:
        """1-based rank of a head in :meth:`order` (``None`` outside the window)."""
        ranks = {h: i + 1 for i, h in enumerate(self.order())}
        return ranks.get(as_heads([head])[0])

    def to_frame(self):
        """A pandas DataFrame, one row per head in the window, best first."""
        import pandas as pd

        rows = []
        for rank, head in enumerate(self.order(), start=1):
            row = {
                "rank": rank,
                "head": str(head),
                "layer": head.layer,
                "head_index": head.head,
                "score": float(self.scores[head]),
                "evr": float(self.evr[head]),
            }
            row.update({name: float(table[head]) for name, table in self.tables.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        best = ", ".join(f"{h} ({float(self.scores[h]):.3f})" for h in self.order()[:5])
        window = "" if self.layers is None else f", layers {self.layers[0]}:{self.layers[1]}"
        return f"HeadRanking({self.concept!r}, criterion={self.criterion!r}{window}, top: {best})"

    # -- JSON -----------------------------------------------------------------------------

    def body(self) -> dict:
        return {
            "concept": self.concept,
            "criterion": self.criterion,
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "shape": list(self.shape),
            "n_atoms": self.n_atoms,
            "layers": None if self.layers is None else list(self.layers),
            "token_ids": list(self.token_ids),
            "settings": self.settings,
            "scores": self.scores.tolist(),
            "evr": [[None if math.isnan(x) else x for x in row] for row in self.evr.tolist()],
            "support": self.support.tolist(),
            "tables": {name: table.tolist() for name, table in self.tables.items()},
        }

    @classmethod
    def from_body(cls, fields: Fields) -> HeadRanking:
        n_layers, n_heads = _shape(fields)
        n_atoms = fields.int("n_atoms", minimum=0, maximum=MAX_INDEX)
        layers = fields.raw("layers", None)
        if layers is not None:
            if not (
                isinstance(layers, list)
                and len(layers) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in layers)
            ):
                raise fields.error("field 'layers' must be [first, last] (integers) or null")
            try:
                layers = check_window(tuple(layers), n_layers)
            except InputError as error:
                raise fields.error(f"field 'layers': {str(error).rstrip('.')}") from error
        scores = _table(fields, "scores", n_layers, n_heads)
        evr = _table(fields, "evr", n_layers, n_heads, allow_null=True)
        support = _support(fields, n_layers, n_heads, n_atoms)
        table_fields = fields.nested("tables")
        tables = {
            name: _table(table_fields, name, n_layers, n_heads, allow_null=True)
            for name in table_fields.data
        }
        settings = fields.raw("settings", {})
        if not isinstance(settings, dict):
            raise fields.error("field 'settings' must be an object")
        return cls(
            concept=fields.str("concept"),
            criterion=fields.str("criterion"),
            scores=scores,
            evr=evr,
            support=support,
            n_atoms=n_atoms,
            model_id=fields.str("model_id"),
            fingerprint=fields.str("fingerprint"),
            token_ids=fields.ints("token_ids", minimum=0, maximum=MAX_INDEX),
            layers=layers,
            tables=tables,
            settings=settings,
        )


#: The most heads a ranking may describe: far above any real model (Llama-3-405B has
#: 126 x 128 = 16,128), low enough that a crafted ``shape`` cannot exhaust memory.
MAX_HEADS = 1_000_000


def _shape(fields: Fields) -> tuple[int, int]:
    shape = fields.ints("shape", minimum=1, maximum=MAX_HEADS)
    if len(shape) != 2 or shape[0] * shape[1] > MAX_HEADS:
        raise fields.error(
            f"field 'shape' must be [n_layers, n_heads] of a real model (at most {MAX_HEADS} "
            f"heads), found {shape[:4]}"
        )
    return shape[0], shape[1]


def _rows(fields: Fields, key: str, n_layers: int, n_heads: int) -> list[list]:
    """``fields[key]`` as ``n_layers`` lists of ``n_heads`` entries each, or an ArtifactError."""
    rows = fields.list(key)
    if len(rows) != n_layers or any(not isinstance(r, list) or len(r) != n_heads for r in rows):
        raise fields.error(f"field {key!r} must be a {n_layers} x {n_heads} table")
    return rows


def _table(
    fields: Fields, key: str, n_layers: int, n_heads: int, *, allow_null: bool = False
) -> torch.Tensor:
    values = []
    for row in _rows(fields, key, n_layers, n_heads):
        for value in row:
            number = None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                try:
                    number = float(value)
                except OverflowError:
                    number = None
            if value is None and allow_null:
                values.append(math.nan)
            elif number is not None and math.isfinite(number):
                values.append(number)
            else:
                shown = (
                    value if isinstance(value, (int, float, type(None))) else type(value).__name__
                )
                raise fields.error(f"field {key!r} holds {shown!r:.40}; expected finite numbers")
    return torch.tensor(values, dtype=torch.float64).reshape(n_layers, n_heads)


def _support(fields: Fields, n_layers: int, n_heads: int, n_atoms: int) -> torch.Tensor:
    """``[n_layers, n_heads, n_atoms]`` token ids (an empty list when no SOMP was run)."""
    if n_atoms == 0 and fields.list("support") == []:
        return torch.zeros(n_layers, n_heads, 0, dtype=torch.long)
    expected = f"field 'support' must be {n_layers} x {n_heads} x {n_atoms} token ids"
    values: list[int] = []
    for row in _rows(fields, "support", n_layers, n_heads):
        for atoms in row:
            if not isinstance(atoms, list) or len(atoms) != n_atoms:
                raise fields.error(expected)
            for token in atoms:
                if isinstance(token, bool) or not isinstance(token, int):
                    raise fields.error(expected)
                if not 0 <= token <= MAX_INDEX:
                    raise fields.error(f"field 'support' holds token id {token!r:.40}")
                values.append(token)
    return torch.tensor(values, dtype=torch.long).reshape(n_layers, n_heads, n_atoms)
