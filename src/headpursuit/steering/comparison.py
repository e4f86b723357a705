"""Steered generations side by side: unmodified, steered, and matched random controls.

:func:`compare_generations` decodes greedily (with the chat template by default) three
ways for each prompt: without intervention, with the chosen heads scaled by α, and with
random control heads (same count per layer, disjoint, one set per seed) scaled by the
same α. The result is a :class:`SteeringRun`, saved as JSON of kind
``headpursuit.steering``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DegenerateDataError, InputError
from ..heads import Head, HeadLike, as_heads, check_heads, heads_to_text
from ..io import MAX_INDEX, Fields, JsonArtifact, register_artifact
from ..models.architectures import AttentionSites
from ..models.loading import LoadedModel
from ..ranking.controls import draw_controls
from .generation import generate
from .hooks import POSITIONS, steer


@register_artifact
@dataclass
class SteeringRun(JsonArtifact):
    """Generations with and without an intervention.

    Attributes:
        heads: the steered heads.
        alpha: their scale (−1 flips, 0 ablates).
        positions: where the intervention applied ("all", "prompt", "generated", ...).
        controls: one list of random control heads per seed.
        prompts: the inputs.
        unmodified: one generation per prompt, no intervention.
        steered: one generation per prompt, ``heads`` scaled by ``alpha``.
        control_outputs: ``[n_seeds][n_prompts]`` generations with the controls scaled.
        concept: the concept the heads were chosen for, if any.
        borrowed: per control set, ``{layer: count}`` heads borrowed from nearby layers.
    """

    kind = "headpursuit.steering"
    made_by = "headpursuit steer"

    heads: list[Head]
    alpha: float
    positions: str
    controls: list[list[Head]]
    prompts: list[str]
    unmodified: list[str]
    steered: list[str]
    control_outputs: list[list[str]]
    model_id: str
    fingerprint: str
    concept: str = ""
    max_new_tokens: int = 40
    borrowed: list[dict[int, int]] | None = None

    def to_frame(self):
        """A pandas DataFrame, one row per prompt, one column per variant."""
        import pandas as pd

        rows = []
        for i, prompt in enumerate(self.prompts):
            row = {"prompt": prompt, "unmodified": self.unmodified[i], "steered": self.steered[i]}
            for seed, outputs in enumerate(self.control_outputs):
                row[f"control_{seed}"] = outputs[i]
            rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        heads = ", ".join(str(h) for h in self.heads)
        return (
            f"SteeringRun(alpha={self.alpha}, heads=[{heads}], {len(self.prompts)} prompts, "
            f"{len(self.controls)} control sets)"
        )

    def body(self) -> dict:
        return {
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "concept": self.concept,
            "alpha": self.alpha,
            "positions": self.positions,
            "max_new_tokens": self.max_new_tokens,
            "heads": heads_to_text(self.heads),
            "controls": [heads_to_text(c) for c in self.controls],
            "borrowed": [{str(k): v for k, v in b.items()} for b in self.borrowed or []],
            "examples": [
                {
                    "prompt": prompt,
                    "unmodified": self.unmodified[i],
                    "steered": self.steered[i],
                    "controls": [outputs[i] for outputs in self.control_outputs],
                }
                for i, prompt in enumerate(self.prompts)
            ],
        }

    @classmethod
    def from_body(cls, fields: Fields) -> SteeringRun:
        heads = fields.heads("heads")
        if not heads:
            raise fields.error("field 'heads' is empty")
        positions = fields.str("positions")
        if positions not in POSITIONS:
            raise fields.error(f"field 'positions' is {positions[:40]!r}, not one of {POSITIONS}")
        controls = [
            _heads(fields, "controls", i, item) for i, item in enumerate(fields.list("controls"))
        ]
        for i, control in enumerate(controls):
            if len(control) != len(heads) or set(control) & set(heads):
                raise fields.error(
                    f"control set {i} must be {len(heads)} heads disjoint from the steered ones"
                )
        borrowed = [_borrowed(fields, item) for item in fields.list("borrowed", [])]
        if borrowed and len(borrowed) != len(controls):
            raise fields.error(f"{len(borrowed)} 'borrowed' entries for {len(controls)} controls")
        examples = fields.items("examples")
        if not examples:
            raise fields.error("field 'examples' is empty")
        outputs: list[list[str]] = [[] for _ in controls]
        for example in examples:
            texts = example.strs("controls")
            if len(texts) != len(controls):
                raise example.error(
                    f"{len(texts)} control outputs for {len(controls)} control sets"
                )
            for s, text in enumerate(texts):
                outputs[s].append(text)
        return cls(
            heads=heads,
            alpha=fields.float("alpha"),
            positions=positions,
            controls=controls,
            prompts=[e.str("prompt") for e in examples],
            unmodified=[e.str("unmodified") for e in examples],
            steered=[e.str("steered") for e in examples],
            control_outputs=outputs,
            model_id=fields.str("model_id"),
            fingerprint=fields.str("fingerprint"),
            concept=fields.str("concept", ""),
            max_new_tokens=fields.int("max_new_tokens", 0, minimum=0, maximum=MAX_INDEX),
            borrowed=borrowed,
        )


def _borrowed(fields: Fields, item: object) -> dict[int, int]:
    if not isinstance(item, dict) or not all(
        isinstance(k, str)
        and k.isdigit()
        and len(k) < 10
        and isinstance(v, int)
        and not isinstance(v, bool)
        and 0 < v <= MAX_INDEX
        for k, v in item.items()
    ):
        raise fields.error("field 'borrowed' must hold {layer: count} objects")
    return {int(k): v for k, v in item.items()}


def _heads(fields: Fields, key: str, index: int, item: object) -> list[Head]:
    return Fields({"heads": item}, f"{fields.source} [{key}][{index}]").heads("heads")


@contextmanager
def refuse_non_finite_logits(model: nn.Module, what: str) -> Iterator[None]:
    """Inside the block, raise :class:`DegenerateDataError` as soon as a row of the model's
    logits holds NaN or inf, or is constant over the vocabulary (what an overflow inside an
    RMS norm leaves: the norm's scale becomes 0): greedy decoding would turn them into
    empty or arbitrary text, silently."""
    head = model.get_output_embeddings()
    if head is None:
        yield
        return

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        last = output[..., -1, :].float()  # [batch, vocab], the logits decoding reads
        if not torch.isfinite(last).all() or (last.amax(-1) == last.amin(-1)).any():
            raise DegenerateDataError(f"The logits became NaN, infinite or constant {what}.")

    handle = head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def compare_generations(
    loaded: LoadedModel,
    prompts: Sequence[str],
    heads: Sequence[HeadLike],
    *,
    alpha: float = -1.0,
    positions: str = "all",
    n_controls: int = 1,
    seed: int = 0,
    max_new_tokens: int = 40,
    chat: bool = True,
    concept: str = "",
) -> SteeringRun:
    """Generate without intervention, with ``heads`` scaled by α, and with matched controls.

    Args:
        heads: the heads to steer (0-indexed).
        alpha: scale of the heads' outputs.
        positions: see :func:`~headpursuit.steer`.
        n_controls: how many random control head sets (seeds ``seed .. seed+n_controls-1``).

    Every argument is checked before the first token is generated.
    """
    if not prompts:
        raise InputError("No prompts to generate from.")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if bad:
        raise InputError(f"Prompt {bad[0]} is {prompts[bad[0]]!r:.60}; give non-empty text.")
    if positions not in POSITIONS:
        raise InputError(f"Unknown positions {positions!r}; choose one of {', '.join(POSITIONS)}.")
    if not math.isfinite(float(alpha)):
        raise InputError(f"alpha must be a finite number, got {alpha}.")
    if n_controls < 0:
        raise InputError(f"The number of control sets must be 0 or more, got {n_controls}.")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    heads = as_heads(heads)
    if not heads:
        raise InputError("No heads to steer; name some with --head or give --ranking.")
    sites = AttentionSites(loaded.model)
    check_heads(heads, sites.n_layers, sites.n_heads)
    draws = [
        draw_controls(heads, sites.n_layers, sites.n_heads, seed=seed + s)
        for s in range(n_controls)
    ]
    controls = [draw.heads for draw in draws]
    kwargs = {"max_new_tokens": max_new_tokens, "chat": chat}
    model = loaded.model
    overflow = (
        f"with heads scaled by alpha={alpha:g}: the activations overflow, so the generations "
        "would be meaningless. Use a smaller |alpha|."
    )
    with refuse_non_finite_logits(
        model, "in the unmodified model; load it in float32 or bfloat16 (--dtype)"
    ):
        unmodified = generate(loaded, prompts, **kwargs)[1]
    with (
        steer(model, heads, alpha, positions=positions, sites=sites),
        refuse_non_finite_logits(model, overflow),
    ):
        steered = generate(loaded, prompts, **kwargs)[1]
    control_outputs = []
    for control in controls:
        with (
            steer(model, control, alpha, positions=positions, sites=sites),
            refuse_non_finite_logits(model, overflow),
        ):
            control_outputs.append(generate(loaded, prompts, **kwargs)[1])
    return SteeringRun(
        heads=heads,
        alpha=alpha,
        positions=positions,
        controls=controls,
        prompts=list(prompts),
        unmodified=unmodified,
        steered=steered,
        control_outputs=control_outputs,
        model_id=loaded.model_id,
        fingerprint=loaded.fingerprint,
        concept=concept,
        max_new_tokens=max_new_tokens,
        borrowed=[draw.borrowed for draw in draws],
    )
