"""Synthetic artifacts for the report tests: the demo's shapes without running a model.

:class:`StandInExperiment` mimics the public surface of
``headpursuit.evaluation.experiment.ExperimentResult`` that the report reads (``kind``,
``sets``, ``arms``, ``settings()``, ``normalised()``, ``summary()``, ``verdicts()``); its
statistics are simple stand-ins (the CI is the value ± 0.05), as the report only draws
them. It is not registered as an artifact, so it never shadows the real class.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch

from headpursuit import Head, HeadRanking
from headpursuit.io import JsonArtifact
from headpursuit.ranking.explain import Explanation, HeadExplanation
from headpursuit.steering.comparison import SteeringRun

N_LAYERS, N_HEADS = 30, 9  # SmolLM2-135M
FINGERPRINT = "0123456789abcdef"
WORDS = {
    "colors": ["white", "black", "red", "blue", "green", "yellow", "pink", "grey"],
    "countries": ["France", "Japan", "Germany", "Italy", "Spain", "Canada", "Peru", "Chile"],
}


def ranking(
    concept: str,
    seed: int,
    *,
    criterion: str = "specificity",
    shape: tuple[int, int] = (N_LAYERS, N_HEADS),
    layers: tuple[int, int] | None = None,
) -> HeadRanking:
    """A ranking with random EVR, a random-dictionary table and scores = EVR - random EVR."""
    generator = torch.Generator().manual_seed(seed)
    evr = torch.rand(*shape, generator=generator, dtype=torch.float64)
    random_evr = 0.3 * torch.rand(*shape, generator=generator, dtype=torch.float64)
    support = torch.randint(100, 108, (*shape, 3), generator=generator)
    scores = evr - random_evr if criterion == "specificity" else evr.flip(0)
    return HeadRanking(
        concept,
        criterion,
        scores,
        evr,
        support,
        3,
        "toy-135M",
        FINGERPRINT,
        list(range(100, 108)),
        layers=layers,
        tables={"random_evr": random_evr} if criterion == "specificity" else {},
    )


def explanation(source: HeadRanking, k: int = 3, extra_token: str = "") -> Explanation:
    """SOMP and logit-lens tokens for the ranking's top k heads (the concept's words)."""
    words = WORDS[source.concept]
    items = []
    for i, head in enumerate(source.top(k)):
        somp = words[i : i + 4] + ([extra_token] if extra_token else [])
        evr = [round(0.1 * (j + 1) + 0.01 * i, 3) for j in range(len(somp))]
        lens = [words[(i + 2) % len(words)], "the"]
        items.append(
            HeadExplanation(
                head,
                list(range(100 + i, 100 + i + len(somp))),
                somp,
                evr,
                [200 + i, 201],
                lens,
                [7 - i, 3],
            )
        )
    return Explanation(items, 4, 40, "toy-135M", FINGERPRINT, source=f"top {k} of {source.concept}")


def steering(source: HeadRanking, n_controls: int = 1) -> SteeringRun:
    """A run where flipping the concept's heads changes one word, the controls none or one."""
    prompt, before, after = {
        "colors": (
            "What colour is the sky on a clear day?",
            "The sky is blue on a clear day.",
            "The sky is grey on a clear day.",
        ),
        "countries": (
            "What is the capital of France?",
            "The capital of France is Paris.",
            "The capital of France is London.",
        ),
    }[source.concept]
    controls = [[Head(h.layer, (h.head + 1 + s) % N_HEADS) for h in source.top(3)]
                for s in range(n_controls)]  # fmt: skip
    outputs = [[before if s % 2 == 0 else before.replace("The", "A")] for s in range(n_controls)]
    return SteeringRun(
        heads=source.top(3),
        alpha=-1.0,
        positions="all",
        controls=controls,
        prompts=[prompt],
        unmodified=[before],
        steered=[after],
        control_outputs=outputs,
        model_id="toy-135M",
        fingerprint=FINGERPRINT,
        concept=source.concept,
    )


@dataclass(frozen=True)
class StandInSet:
    name: str
    role: str
    clusters: tuple[str, ...]


@dataclass
class StandInArm:
    arm: str
    k: int
    alpha: float
    heads: list[Head]
    means: dict[str, dict[str, float]]
    items: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seed: int | None = None


@dataclass
class StandInExperiment(JsonArtifact):
    """The report-facing surface of an experiment result (see the module docstring)."""

    kind = "headpursuit.experiment"
    made_by = "tests"

    task: str
    concept: str
    model_id: str
    fingerprint: str
    primary: str
    direction: str
    sets: list[StandInSet]
    arms: list[StandInArm]

    def settings(self) -> list[tuple[int, float]]:
        return list(dict.fromkeys((a.k, a.alpha) for a in self.arms if a.arm != "baseline"))

    def normalised(self, arm: StandInArm, set_name: str, metric: str | None = None) -> float:
        metric = metric or self.primary
        base = self.arms[0].means[set_name][metric]
        return arm.means[set_name][metric] / base if base else math.nan

    def summary(self, metric: str | None = None) -> list[dict[str, Any]]:
        rows = []
        for set_ in self.sets:
            for k, alpha in self.settings():
                arms = [a for a in self.arms if (a.k, a.alpha) == (k, alpha)]
                controls = [self.normalised(a, set_.name) for a in arms if a.arm == "control"]
                for arm in arms:
                    if arm.arm == "control":
                        continue
                    value = self.normalised(arm, set_.name)
                    extreme = sum(
                        (c <= value) if self.direction == "decrease" else (c >= value)
                        for c in controls
                    )
                    p = (1 + extreme) / (1 + len(controls)) if arm.arm == "selected" else math.nan
                    ordered = sorted(controls)
                    rows.append(
                        {
                            "set": set_.name,
                            "role": set_.role,
                            "k": k,
                            "alpha": alpha,
                            "arm": arm.arm,
                            "value": value,
                            "low": value - 0.05,
                            "high": value + 0.05,
                            "n_controls": len(controls),
                            "controls_mean": sum(controls) / len(controls),
                            "controls_p5": ordered[0],
                            "controls_p95": ordered[-1],
                            "p": p,
                            "heads": " ".join(str(h) for h in arm.heads),
                        }
                    )
        return rows

    def verdicts(self, arm: str = "selected", level: float = 0.05) -> list[dict[str, Any]]:
        rows = [r for r in self.summary() if r["arm"] == arm]
        out = []
        for k, alpha in self.settings():
            here = [r for r in rows if (r["k"], r["alpha"]) == (k, alpha)]
            target = [r["p"] for r in here if r["role"] == "target"]
            other = [r["p"] for r in here if r["role"] == "nontarget"]
            significant = all(p < level for p in target)
            out.append(
                {
                    "k": k,
                    "alpha": alpha,
                    "target_p": max(target),
                    "nontarget_p": min(other, default=math.nan),
                    "significant": significant,
                    "specific": significant and all(p >= level for p in other),
                }
            )
        return out


def experiment(source: HeadRanking, n_controls: int = 20, seed: int = 0) -> StandInExperiment:
    """QA-like accuracy on a target and two non-target sets; the selected heads hit the target.

    At k = 3 the selected accuracy on the target set is 0.2 x baseline, below every control
    (0.8 to 1.0 x baseline), so its p is 1/21; on the other sets it sits among the controls.
    """
    rng = random.Random(seed)
    names = [source.concept, "months", "numbers"]
    sets = [
        StandInSet(n, "target" if i == 0 else "nontarget", ("a", "b")) for i, n in enumerate(names)
    ]
    base = {n: {"correct": 0.8} for n in names}
    arms = [StandInArm("baseline", 0, 1.0, [], base)]
    for k in (3, 5):
        top = source.top(k)
        selected = {n: {"correct": 0.8 * (0.2 if n == source.concept else 0.93)} for n in names}
        arms.append(StandInArm("selected", k, -1.0, top, selected))
        arms.append(
            StandInArm("evr", k, -1.0, top[::-1], {n: {"correct": 0.8 * 0.5} for n in names})
        )
        for s in range(n_controls):
            means = {n: {"correct": 0.8 * rng.uniform(0.8, 1.0)} for n in names}
            arms.append(StandInArm("control", k, -1.0, [Head(0, s % N_HEADS)], means, seed=s))
    return StandInExperiment(
        "qa", source.concept, "toy-135M", FINGERPRINT, "correct", "decrease", sets, arms
    )


def demo_artifacts(with_experiments: bool = True) -> list[Any]:
    """What ``headpursuit demo`` passes to the report, for colors and countries."""
    artifacts: list[Any] = []
    for seed, concept in enumerate(("colors", "countries")):
        ranked = ranking(concept, seed)
        artifacts += [ranked, explanation(ranked), steering(ranked)]
        if with_experiments:
            artifacts.append(experiment(ranked, seed=seed))
    return artifacts
