"""Explain heads in words: SOMP tokens over the full vocabulary next to the logit lens.

This is the paper's Table 1. For each chosen head, SOMP over the whole (normalised)
unembedding picks ``n_atoms`` tokens that jointly explain the head's pooled outputs
``H_{l,h}`` (``[n_samples, d_model]``); the multi-sample logit lens lists the tokens most
often among each sample's top logits. The result is an :class:`Explanation`, saved as a
JSON artifact of kind ``headpursuit.explanation``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._version import __version__
from .architectures import AttentionSites
from .capture import Activations, ArtifactError, write_json
from .pursuit import logit_lens
from .ranking import Head, head_somp

EXPLANATION_KIND = "headpursuit.explanation"


def token_text(tokenizer: Any, token_id: int) -> str:
    """A token as readable text (decoded, surrounding spaces stripped)."""
    text = tokenizer.decode([int(token_id)])
    return text.strip() or repr(text)


@dataclass
class HeadExplanation:
    """One head's tokens.

    Attributes:
        head: the head.
        somp_ids, somp_tokens: SOMP atoms over the full vocabulary, in selection order.
        evr: explained variance ratio after each SOMP step (same length as ``somp_ids``).
        lens_ids, lens_tokens, lens_counts: logit-lens tokens, most frequent first, and in
            how many samples' top-``per_sample`` logits each appeared.
    """

    head: Head
    somp_ids: list[int]
    somp_tokens: list[str]
    evr: list[float]
    lens_ids: list[int]
    lens_tokens: list[str]
    lens_counts: list[int]

    def to_json(self) -> dict:
        return {
            "layer": self.head.layer,
            "head": self.head.head,
            "somp_ids": self.somp_ids,
            "somp_tokens": self.somp_tokens,
            "evr": self.evr,
            "lens_ids": self.lens_ids,
            "lens_tokens": self.lens_tokens,
            "lens_counts": self.lens_counts,
        }

    @classmethod
    def from_json(cls, data: dict) -> HeadExplanation:
        return cls(
            head=Head(data["layer"], data["head"]),
            somp_ids=list(data["somp_ids"]),
            somp_tokens=list(data["somp_tokens"]),
            evr=[float(x) for x in data["evr"]],
            lens_ids=list(data["lens_ids"]),
            lens_tokens=list(data["lens_tokens"]),
            lens_counts=list(data["lens_counts"]),
        )


@dataclass
class Explanation:
    """SOMP and logit-lens tokens for several heads of one model.

    Attributes:
        heads: one :class:`HeadExplanation` per head, in the order asked.
        n_atoms: SOMP atoms per head.
        n_samples: how many pooled samples the tokens explain.
        model_id, fingerprint: the model the activations came from.
        source: where the heads came from (e.g. "--head" or a ranking's concept).
    """

    heads: list[HeadExplanation]
    n_atoms: int
    n_samples: int
    model_id: str
    fingerprint: str
    source: str = ""
    library_version: str = field(default=__version__)

    def to_frame(self):
        """A pandas DataFrame, one row per head: SOMP tokens, final EVR, logit-lens tokens."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "head": str(item.head),
                    "layer": item.head.layer,
                    "head_index": item.head.head,
                    "somp_tokens": ", ".join(item.somp_tokens),
                    "evr": item.evr[-1] if item.evr else float("nan"),
                    "logit_lens_tokens": ", ".join(item.lens_tokens),
                }
                for item in self.heads
            ]
        )

    def __repr__(self) -> str:
        names = ", ".join(str(item.head) for item in self.heads[:6])
        more = "" if len(self.heads) <= 6 else f", ... ({len(self.heads)} heads)"
        return f"Explanation({names}{more}; {self.n_atoms} atoms, model={self.model_id!r})"

    def to_json(self) -> dict:
        return {
            "kind": EXPLANATION_KIND,
            "library_version": self.library_version,
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "n_atoms": self.n_atoms,
            "n_samples": self.n_samples,
            "source": self.source,
            "heads": [item.to_json() for item in self.heads],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write JSON atomically."""
        return write_json(path, self.to_json())

    @classmethod
    def from_json(cls, data: dict) -> Explanation:
        return cls(
            heads=[HeadExplanation.from_json(item) for item in data["heads"]],
            n_atoms=int(data["n_atoms"]),
            n_samples=int(data["n_samples"]),
            model_id=data["model_id"],
            fingerprint=data["fingerprint"],
            source=data.get("source", ""),
            library_version=data.get("library_version", "unknown"),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Explanation:
        """Read a file written by :meth:`save`; raises :class:`ArtifactError` on anything else."""
        data = read_json_artifact(path, EXPLANATION_KIND, "headpursuit explain")
        return cls.from_json(data)


def read_json_artifact(path: str | os.PathLike[str], kind: str, maker: str) -> dict:
    """Read a JSON artifact and check its ``kind``; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No file at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path} is not a headpursuit JSON artifact: {error}") from error
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else None
        raise ArtifactError(
            f"{path} is not a {kind} file (kind={found!r}); make one with `{maker}`."
        )
    return data


def explain_heads(
    activations: Activations,
    sites: AttentionSites,
    tokenizer: Any,
    heads: Sequence[Head],
    *,
    n_atoms: int = 10,
    per_sample: int = 5,
    n_tokens: int = 5,
    source: str = "",
) -> Explanation:
    """SOMP tokens over the full unembedding and logit-lens tokens for each head.

    Args:
        activations: pooled head outputs, ``pooled`` of shape ``[n, L, H, head_dim]``.
        sites: the model's attention sites (W_O slices and the ``[vocab, d_model]`` unembedding).
        tokenizer: to turn token ids into text.
        heads: the heads to explain (0-indexed).
        n_atoms: SOMP atoms per head.
        per_sample, n_tokens: logit lens: each sample's top rows, then the most frequent.

    Raises:
        ValueError: for no heads, a head outside the model, or ``n_atoms`` out of range.
    """
    heads = [Head(*h) for h in dict.fromkeys(tuple(h) for h in heads)]
    if not heads:
        raise ValueError("No heads to explain; name some with --head L12H3 or give a ranking.")
    for head in heads:
        if not (0 <= head.layer < sites.n_layers and 0 <= head.head < sites.n_heads):
            raise ValueError(
                f"Head {head} is outside this model ({sites.n_layers} layers x "
                f"{sites.n_heads} heads, 0-indexed)."
            )
    unembedding = sites.unembedding()  # [vocab, d_model]
    if not 1 <= n_atoms <= unembedding.shape[0]:
        raise ValueError(f"n_atoms must be between 1 and {unembedding.shape[0]}, got {n_atoms}.")
    result = head_somp(activations, sites, unembedding, n_atoms, heads=heads)
    explained = []
    for row, head in enumerate(heads):
        somp_ids = result.support[row].tolist()
        _, common = logit_lens(
            activations.residual(sites, head.layer, head.head),
            unembedding,
            per_sample=per_sample,
            n_tokens=n_tokens,
        )
        explained.append(
            HeadExplanation(
                head=head,
                somp_ids=somp_ids,
                somp_tokens=[token_text(tokenizer, t) for t in somp_ids],
                evr=[float(x) for x in result.evr[row]],
                lens_ids=[t for t, _ in common],
                lens_tokens=[token_text(tokenizer, t) for t, _ in common],
                lens_counts=[c for _, c in common],
            )
        )
    return Explanation(
        heads=explained,
        n_atoms=n_atoms,
        n_samples=activations.n_samples,
        model_id=activations.model_id,
        fingerprint=activations.fingerprint,
        source=source,
    )
