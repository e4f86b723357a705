"""Explain heads in words: SOMP tokens over the full vocabulary next to the logit lens.

This is the paper's Table 1. For each chosen head, SOMP over the whole (normalised)
unembedding picks ``n_atoms`` tokens that jointly explain the head's pooled outputs
``H_{l,h}`` (``[n_samples, d_model]``); the multi-sample logit lens lists the tokens most
often among each sample's top logits. The result is an :class:`Explanation`, saved as a
JSON artifact of kind ``headpursuit.explanation``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..activations.store import Activations
from ..errors import DegenerateDataError, InputError
from ..heads import Head, HeadLike, as_heads, check_heads
from ..io import MAX_INDEX, Fields, JsonArtifact, register_artifact
from ..models.architectures import AttentionSites
from .head_ranking import check_samples, head_somp
from .pursuit import logit_lens


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
            "head": str(self.head),
            "somp_ids": self.somp_ids,
            "somp_tokens": self.somp_tokens,
            "evr": self.evr,
            "lens_ids": self.lens_ids,
            "lens_tokens": self.lens_tokens,
            "lens_counts": self.lens_counts,
        }

    @classmethod
    def from_fields(cls, fields: Fields, n_atoms: int, n_samples: int) -> HeadExplanation:
        """Read one head's entry; ``n_atoms`` and ``n_samples`` bound its lists and counts."""
        item = cls(
            head=fields.head("head"),
            somp_ids=fields.ints("somp_ids", minimum=0, maximum=MAX_INDEX),
            somp_tokens=fields.strs("somp_tokens"),
            evr=fields.floats("evr"),
            lens_ids=fields.ints("lens_ids", minimum=0, maximum=MAX_INDEX),
            lens_tokens=fields.strs("lens_tokens"),
            lens_counts=fields.ints("lens_counts", minimum=0, maximum=n_samples),
        )
        if not len(item.somp_ids) == len(item.somp_tokens) == len(item.evr):
            raise fields.error("somp_ids, somp_tokens and evr differ in length")
        if len(item.somp_ids) > n_atoms:
            raise fields.error(f"{len(item.somp_ids)} SOMP tokens, more than n_atoms={n_atoms}")
        if not len(item.lens_ids) == len(item.lens_tokens) == len(item.lens_counts):
            raise fields.error("lens_ids, lens_tokens and lens_counts differ in length")
        return item


@register_artifact
@dataclass
class Explanation(JsonArtifact):
    """SOMP and logit-lens tokens for several heads of one model.

    Attributes:
        heads: one :class:`HeadExplanation` per head, in the order asked.
        n_atoms: SOMP atoms per head.
        n_samples: how many pooled samples the tokens explain.
        model_id, fingerprint: the model the activations came from.
        source: where the heads came from (e.g. "--head" or a ranking's concept).
    """

    kind = "headpursuit.explanation"
    made_by = "headpursuit explain"

    heads: list[HeadExplanation]
    n_atoms: int
    n_samples: int
    model_id: str
    fingerprint: str
    source: str = ""

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

    def body(self) -> dict:
        return {
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "n_atoms": self.n_atoms,
            "n_samples": self.n_samples,
            "source": self.source,
            "heads": [item.to_json() for item in self.heads],
        }

    @classmethod
    def from_body(cls, fields: Fields) -> Explanation:
        n_atoms = fields.int("n_atoms", minimum=1, maximum=MAX_INDEX)
        n_samples = fields.int("n_samples", minimum=2, maximum=MAX_INDEX)
        heads = [
            HeadExplanation.from_fields(item, n_atoms, n_samples) for item in fields.items("heads")
        ]
        if not heads:
            raise fields.error("field 'heads' is empty")
        return cls(
            heads=heads,
            n_atoms=n_atoms,
            n_samples=n_samples,
            model_id=fields.str("model_id"),
            fingerprint=fields.str("fingerprint"),
            source=fields.str("source", ""),
        )


def check_explainable(activations: Activations, heads: Sequence[Head]) -> None:
    """Refuse degenerate activations, and heads whose output does not vary over the samples."""
    constant = set(check_samples(activations)) & set(heads)
    if constant:
        names = ", ".join(str(h) for h in heads if h in constant)
        raise DegenerateDataError(
            f"Head(s) {names} give the same output for every one of the "
            f"{activations.n_samples} prompts, so SOMP has nothing to explain; drop them, or "
            "capture more varied prompts."
        )


def explain_heads(
    activations: Activations,
    sites: AttentionSites,
    tokenizer: Any,
    heads: Sequence[HeadLike],
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
        InputError: for no heads, a head outside the model, or ``n_atoms``, ``per_sample``
            or ``n_tokens`` out of range.
        DegenerateDataError: for activations of fewer than two distinct prompts, or a head
            whose output does not vary over them (there is nothing to explain).
    """
    heads = as_heads(heads)
    if not heads:
        raise InputError("No heads to explain; name some with --head L12H3 or give a ranking.")
    check_heads(heads, sites.n_layers, sites.n_heads)
    activations.check_model(sites)
    check_explainable(activations, heads)
    unembedding = sites.unembedding()  # [vocab, d_model]
    vocab = unembedding.shape[0]
    for name, value in (("n_atoms", n_atoms), ("per_sample", per_sample), ("n_tokens", n_tokens)):
        if not 1 <= value <= vocab:
            raise InputError(f"{name} must be between 1 and {vocab} (the vocabulary), got {value}.")
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
