"""Steered generations side by side: unmodified, steered, and matched random controls.

:func:`compare_generations` decodes greedily (with the chat template by default) three
ways for each prompt: without intervention, with the chosen heads scaled by α, and with
random control heads (same count per layer, disjoint, one set per seed) scaled by the
same α. The result is a :class:`SteeringRun`, saved as JSON of kind
``headpursuit.steering``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._version import __version__
from .architectures import AttentionSites
from .capture import write_json
from .explain import read_json_artifact
from .generation import generate
from .loading import LoadedModel
from .ranking import Head, matched_controls
from .steering import POSITIONS, steer

STEERING_KIND = "headpursuit.steering"


@dataclass
class SteeringRun:
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
    """

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
    library_version: str = field(default=__version__)

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

    def to_json(self) -> dict:
        return {
            "kind": STEERING_KIND,
            "library_version": self.library_version,
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "concept": self.concept,
            "alpha": self.alpha,
            "positions": self.positions,
            "max_new_tokens": self.max_new_tokens,
            "heads": [str(h) for h in self.heads],
            "controls": [[str(h) for h in c] for c in self.controls],
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

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write JSON atomically."""
        return write_json(path, self.to_json())

    @classmethod
    def from_json(cls, data: dict) -> SteeringRun:
        from .ranking import parse_head

        examples = data["examples"]
        n_controls = len(data["controls"])
        return cls(
            heads=[parse_head(h) for h in data["heads"]],
            alpha=float(data["alpha"]),
            positions=data["positions"],
            controls=[[parse_head(h) for h in c] for c in data["controls"]],
            prompts=[e["prompt"] for e in examples],
            unmodified=[e["unmodified"] for e in examples],
            steered=[e["steered"] for e in examples],
            control_outputs=[[e["controls"][s] for e in examples] for s in range(n_controls)],
            model_id=data["model_id"],
            fingerprint=data["fingerprint"],
            concept=data.get("concept", ""),
            max_new_tokens=int(data.get("max_new_tokens", 0)),
            library_version=data.get("library_version", "unknown"),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SteeringRun:
        """Read a file written by :meth:`save`; raises ``ArtifactError`` on anything else."""
        return cls.from_json(read_json_artifact(path, STEERING_KIND, "headpursuit steer"))


def compare_generations(
    loaded: LoadedModel,
    prompts: Sequence[str],
    heads: Sequence[Head],
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
    """
    if not prompts:
        raise ValueError("No prompts to generate from.")
    if positions not in POSITIONS:
        raise ValueError(f"Unknown positions {positions!r}; choose one of {POSITIONS}.")
    heads = [Head(*h) for h in dict.fromkeys(tuple(h) for h in heads)]
    if not heads:
        raise ValueError("No heads to steer; name some with --head or give --ranking.")
    sites = AttentionSites(loaded.model)
    controls = [
        matched_controls(heads, sites.n_layers, sites.n_heads, seed=seed + s)
        for s in range(n_controls)
    ]
    kwargs = {"max_new_tokens": max_new_tokens, "chat": chat}
    unmodified = generate(loaded, prompts, **kwargs)[1]
    with steer(loaded.model, heads, alpha, positions=positions, sites=sites):
        steered = generate(loaded, prompts, **kwargs)[1]
    control_outputs = []
    for control in controls:
        with steer(loaded.model, control, alpha, positions=positions, sites=sites):
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
    )
