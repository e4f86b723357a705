"""Rank heads by how much of their output a concept explains; pick top-k; matched controls.

The paper's criterion: run SOMP on each head's residual contributions H_{l,h} over the
unembedding restricted to the concept's tokens, and rank heads by the explained variance
ratio (EVR). Heads come out as :class:`Head` (layer, head) pairs, 0-indexed.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from ._version import __version__
from .architectures import AttentionSites
from .capture import Activations, ArtifactError, atomic_write, write_json
from .pursuit import SOMPResult, somp_factored

RANKING_KIND = "headpursuit.ranking"


class Head(NamedTuple):
    """An attention head: 0-indexed layer and head."""

    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"


def parse_head(text: str) -> Head:
    """``"L12H3"`` or ``"12.3"`` -> ``Head(12, 3)``."""
    cleaned = text.strip().upper()
    try:
        if cleaned.startswith("L") and "H" in cleaned:
            layer, head = cleaned[1:].split("H")
        else:
            layer, head = cleaned.split(".")
        return Head(int(layer), int(head))
    except ValueError as error:
        raise ValueError(f"Cannot read head {text!r}; write it as L12H3 or 12.3.") from error


def head_somp(
    activations: Activations,
    sites: AttentionSites,
    dictionary: torch.Tensor,
    n_atoms: int,
    *,
    center: bool = True,
    heads: Sequence[Head] | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> SOMPResult:
    """SOMP on every head's (or the given heads') contributions, computed in head space.

    Args:
        dictionary: ``[v, d_model]`` atoms (e.g. rows of the unembedding), any float dtype.
        device: where SOMP runs (default: the device of the model's output embeddings,
            e.g. CUDA for a model on the GPU). Results come back on the CPU.

    Returns:
        :class:`SOMPResult` with one row per head, in ``heads`` order (default: layer-major).
    """
    activations.check_model(sites)
    if heads is None:
        heads = [Head(l, h) for l in range(sites.n_layers) for h in range(sites.n_heads)]
    if device is None:
        embeddings = sites.model.get_output_embeddings()
        device = next(
            iter(embeddings.parameters() if embeddings else sites.model.parameters())
        ).device
    maps_by_layer = {layer: sites.head_matrices(layer) for layer in {h.layer for h in heads}}
    codes = torch.stack([activations.pooled[:, h.layer, h.head] for h in heads])
    maps = torch.stack([maps_by_layer[h.layer][h.head] for h in heads])
    return somp_factored(
        codes, maps, dictionary, n_atoms, center=center, progress=progress, device=device
    )


@dataclass
class HeadRanking:
    """Heads scored for one concept.

    Attributes:
        concept: the concept's name.
        scores: ``[n_layers, n_heads]`` the ranking criterion (higher = more specialised).
        evr: ``[n_layers, n_heads]`` concept-restricted SOMP EVR with ``n_atoms`` atoms.
        support: ``[n_layers, n_heads, n_atoms]`` selected token ids per head.
        n_atoms: atoms per head.
        criterion: how ``scores`` were computed ("evr", or "specificity").
        model_id, fingerprint: the model the activations came from.
        token_ids: the concept's dictionary rows.
    """

    concept: str
    scores: torch.Tensor
    evr: torch.Tensor
    support: torch.Tensor
    n_atoms: int
    criterion: str
    model_id: str
    fingerprint: str
    token_ids: list[int] = field(default_factory=list)

    @property
    def n_heads_total(self) -> int:
        return self.scores.numel()

    def order(self) -> list[Head]:
        """All heads, best first (ties broken by layer then head)."""
        n_heads = self.scores.shape[1]
        flat = self.scores.reshape(-1)
        indices = sorted(range(flat.numel()), key=lambda i: (-float(flat[i]), i))
        return [Head(i // n_heads, i % n_heads) for i in indices]

    def top(self, k: int) -> list[Head]:
        """The k best heads."""
        if not 1 <= k <= self.n_heads_total:
            raise ValueError(
                f"k must be between 1 and {self.n_heads_total} (the number of heads), got {k}."
            )
        return self.order()[:k]

    def to_frame(self):
        """A pandas DataFrame, one row per head, best first."""
        import pandas as pd

        rows = [
            {
                "rank": rank + 1,
                "head": str(head),
                "layer": head.layer,
                "head_index": head.head,
                "score": float(self.scores[head]),
                "evr": float(self.evr[head]),
            }
            for rank, head in enumerate(self.order())
        ]
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        best = ", ".join(f"{h} ({float(self.scores[h]):.3f})" for h in self.order()[:5])
        return f"HeadRanking({self.concept!r}, criterion={self.criterion!r}, top: {best})"

    def to_json(self) -> dict:
        return {
            "kind": RANKING_KIND,
            "library_version": __version__,
            "concept": self.concept,
            "criterion": self.criterion,
            "n_atoms": self.n_atoms,
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "token_ids": self.token_ids,
            "shape": list(self.scores.shape),
            "heads": [
                {
                    "layer": head.layer,
                    "head": head.head,
                    "score": float(self.scores[head]),
                    "evr": float(self.evr[head]),
                    "support": self.support[head].tolist(),
                }
                for head in self.order()
            ],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write JSON (or CSV if the path ends in .csv) atomically."""
        path = Path(path)
        if path.suffix == ".csv":
            return atomic_write(path, lambda tmp: self.to_frame().to_csv(tmp, index=False))
        return write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HeadRanking:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No ranking file at {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ArtifactError(
                f"{path} is not a headpursuit ranking (JSON) file: {error}"
            ) from error
        if not isinstance(data, dict) or data.get("kind") != RANKING_KIND:
            raise ArtifactError(
                f"{path} is not a headpursuit ranking file; make one with `headpursuit rank`."
            )
        n_layers, n_heads = data["shape"]
        scores = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        evr = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        support = torch.zeros(n_layers, n_heads, data["n_atoms"], dtype=torch.long)
        for entry in data["heads"]:
            index = (entry["layer"], entry["head"])
            scores[index], evr[index] = entry["score"], entry["evr"]
            support[index] = torch.tensor(entry["support"])
        return cls(
            data["concept"],
            scores,
            evr,
            support,
            data["n_atoms"],
            data["criterion"],
            data["model_id"],
            data["fingerprint"],
            data["token_ids"],
        )


def rank_heads(
    activations: Activations,
    sites: AttentionSites,
    token_ids: Sequence[int],
    *,
    concept: str = "concept",
    n_atoms: int = 10,
    center: bool = True,
    fold_final_norm: bool = False,
    dictionary: torch.Tensor | None = None,
) -> HeadRanking:
    """Rank all heads by the EVR of SOMP over the concept's unembedding rows.

    Args:
        token_ids: the concept's dictionary rows (see :mod:`headpursuit.concepts`).
        n_atoms: atoms per head (capped at the number of concept tokens).
        fold_final_norm: multiply the atoms by the final norm's gain (see
            :meth:`AttentionSites.dictionary`).
        dictionary: ``[vocab, d_model]`` to restrict (default: ``sites.dictionary(...)``).
    """
    if not token_ids:
        raise ValueError("The concept has no tokens.")
    unembedding = (
        sites.dictionary(fold_final_norm=fold_final_norm) if dictionary is None else dictionary
    )
    vocab = unembedding.shape[0]
    bad = [t for t in token_ids if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"Token ids {bad[:5]} are outside the dictionary (size {vocab}).")
    rows = torch.tensor(sorted(set(token_ids)))
    k = min(n_atoms, len(rows))
    result = head_somp(activations, sites, unembedding[rows], k, center=center)
    shape = (sites.n_layers, sites.n_heads)
    evr = result.final_evr.reshape(shape)
    return HeadRanking(
        concept=concept,
        scores=evr.clone(),
        evr=evr,
        support=rows[result.support].reshape(*shape, k),
        n_atoms=k,
        criterion="evr",
        model_id=activations.model_id,
        fingerprint=activations.fingerprint,
        token_ids=rows.tolist(),
    )


def matched_controls(
    selected: Iterable[Head],
    n_layers: int,
    n_heads: int,
    *,
    seed: int = 0,
    overflow: str = "error",
) -> list[Head]:
    """Random heads with the same count per layer as ``selected``, disjoint from it.

    Args:
        overflow: what to do when a layer has fewer unselected heads than selected ones:
            "error" (raise), or "nearest" (draw the missing heads from the nearest layers,
            so the count stays and the layer distribution is as close as it can be).

    Raises:
        ValueError: with ``overflow="error"``, if some layer cannot be matched.
    """
    if overflow not in ("error", "nearest"):
        raise ValueError(f"overflow must be 'error' or 'nearest', got {overflow!r}.")
    selected = list(dict.fromkeys(selected))
    if any(not 0 <= h.layer < n_layers for h in selected):
        raise ValueError(f"Selected heads must lie in layers 0..{n_layers - 1}.")
    taken = set(selected)
    rng = random.Random(seed)
    controls: list[Head] = []
    missing: list[int] = []
    for layer, count in sorted(Counter(h.layer for h in selected).items()):
        free = [Head(layer, h) for h in range(n_heads) if Head(layer, h) not in taken]
        if len(free) < count and overflow == "error":
            raise ValueError(
                f"Layer {layer} has {count} selected heads and only {len(free)} others: "
                "no disjoint control with the same per-layer counts exists. Use a smaller k."
            )
        picked = rng.sample(free, min(count, len(free)))
        controls.extend(picked)
        taken.update(picked)
        missing.extend([layer] * (count - len(picked)))
    for layer in missing:
        free = [
            Head(l, h) for l in range(n_layers) for h in range(n_heads) if Head(l, h) not in taken
        ]
        if not free:
            raise ValueError("Not enough heads left for a disjoint control set.")
        nearest = min(abs(h.layer - layer) for h in free)
        choice = rng.choice([h for h in free if abs(h.layer - layer) == nearest])
        controls.append(choice)
        taken.add(choice)
    return controls


def jaccard(first: Iterable[Head], second: Iterable[Head]) -> float:
    """Jaccard overlap |A ∩ B| / |A ∪ B| of two head sets (1.0 for two empty sets)."""
    a, b = set(first), set(second)
    return 1.0 if not a and not b else len(a & b) / len(a | b)
