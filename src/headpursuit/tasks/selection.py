"""Head-selection protocols, intervention modes, and the shared condition runner.

Selection protocols (all return a :class:`~headpursuit.HeadRanking`, higher = better):

* ``"evr"``: the paper's concept-restricted SOMP EVR (:func:`~headpursuit.rank_heads`).
* ``"specificity"``: concept EVR minus the mean EVR the same head gets from ``n_random``
  dictionaries of random vocabulary tokens of the same size (concept tokens excluded).
  It removes heads that any token dictionary explains well (with tied embeddings, the
  early heads that copy token embeddings).
* ``"logit_lens"``: the baseline. For every sample the head's residual contribution is
  read through the unembedding (``h @ U.T``, ``[vocab]`` logits), z-scored over the
  vocabulary, and the z-scores of the concept tokens averaged; the score is the mean over
  samples. (A continuous score: "fraction of concept tokens in the top-k" ties at 0 for
  most heads on a small model.)

Every protocol takes an optional layer window ``(min_layer, max_layer)``: heads outside
it score ``-inf`` and are never chosen.

Intervention modes, written as strings: a float (``"-1"``, ``"0"``, ``"-0.5"``, ``"5"``)
scales the heads' outputs by α; ``"mean"`` replaces them by their mean output over the
selection data (mean ablation).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..capture import Activations, write_json
from ..loading import LoadedModel
from ..ranking import Head, HeadRanking, head_somp, matched_controls, rank_heads
from ..steering import steer

METHODS = ("evr", "specificity", "logit_lens")


def apply_window(
    ranking: HeadRanking, window: tuple[int, int] | None, *, criterion: str | None = None
) -> HeadRanking:
    """A copy of ``ranking`` whose heads outside ``[min_layer, max_layer]`` score ``-inf``."""
    scores = ranking.scores.clone()
    if window is not None:
        low, high = window
        layers = torch.arange(scores.shape[0])
        scores[(layers < low) | (layers > high)] = float("-inf")
    return HeadRanking(
        concept=ranking.concept,
        scores=scores,
        evr=ranking.evr,
        support=ranking.support,
        n_atoms=ranking.n_atoms,
        criterion=criterion or ranking.criterion,
        model_id=ranking.model_id,
        fingerprint=ranking.fingerprint,
        token_ids=ranking.token_ids,
    )


def specificity_ranking(
    activations: Activations,
    sites,
    token_ids: Sequence[int],
    *,
    concept: str = "concept",
    n_atoms: int = 10,
    n_random: int = 5,
    seed: int = 0,
    candidate_ids: Sequence[int] | None = None,
) -> HeadRanking:
    """Concept EVR minus the mean EVR of ``n_random`` same-size random token dictionaries.

    Args:
        candidate_ids: the vocabulary rows random tokens are drawn from (default: every
            row; :func:`word_token_ids` gives word-like tokens, a fairer null for a concept
            made of words, and avoids the near-duplicate rows of unused tokens).

    Returns:
        :class:`HeadRanking` with ``scores`` ``[n_layers, n_heads]`` = the difference,
        ``evr`` the raw concept EVR, ``criterion="specificity"``.
    """
    base = rank_heads(activations, sites, token_ids, concept=concept, n_atoms=n_atoms)
    unembedding = sites.unembedding()
    concept_set = set(base.token_ids)
    candidates = range(unembedding.shape[0]) if candidate_ids is None else candidate_ids
    pool = sorted({int(t) for t in candidates} - concept_set)
    if len(pool) < len(base.token_ids):
        raise ValueError("Too few candidate tokens to draw random dictionaries from.")
    rng = random.Random(seed)
    size = len(base.token_ids)
    random_evr = torch.zeros_like(base.evr)
    for _ in range(n_random):
        rows = torch.tensor(sorted(rng.sample(pool, size)))
        result = head_somp(activations, sites, unembedding[rows], base.n_atoms)
        random_evr += result.final_evr.reshape(base.evr.shape)
    scores = base.evr - random_evr / n_random
    ranking = apply_window(base, None, criterion="specificity")
    ranking.scores = scores
    return ranking


_WORD_TOKEN = re.compile(r"^ ?[A-Za-z]{3,}$")


def word_token_ids(tokenizer) -> list[int]:
    """Ids of word-like tokens: 3+ ASCII letters, optionally after one leading space."""
    vocab = tokenizer.get_vocab()
    ids = sorted(vocab.values())
    texts = tokenizer.convert_ids_to_tokens(ids)
    out = []
    for token_id, token in zip(ids, texts, strict=True):
        text = tokenizer.convert_tokens_to_string([token]) if token else ""
        if _WORD_TOKEN.match(text):
            out.append(token_id)
    return out


@torch.inference_mode()
def logit_lens_ranking(
    activations: Activations, sites, token_ids: Sequence[int], *, concept: str = "concept"
) -> HeadRanking:
    """Mean over samples of the concept tokens' vocabulary-z-scored logit-lens logits.

    For head (l, h) and sample i: ``logits = (W_O[l,h] z_i) @ U.T`` (``[vocab]``), standardised
    over the vocabulary, then averaged over the concept's token ids.
    """
    unembedding = sites.unembedding().double()  # [vocab, d_model]
    rows = torch.tensor(sorted(set(token_ids)))
    # Mean and std of h @ U.T over the vocabulary, without forming the [vocab] logits:
    # mean = h . mu and var = h^T Sigma h, with mu, Sigma the mean and covariance of U's rows.
    mu = unembedding.mean(0)  # [d_model]
    centred = unembedding - mu
    sigma = centred.T @ centred / (unembedding.shape[0] - 1)  # [d_model, d_model]
    concept_rows = unembedding[rows]  # [c, d_model]
    scores = torch.zeros(sites.n_layers, sites.n_heads)
    for layer in range(sites.n_layers):
        maps = sites.head_matrices(layer).double()  # [H, d_model, head_dim]
        codes = activations.pooled[:, layer].double()  # [n, H, head_dim]
        contrib = torch.einsum("hdk,nhk->hnd", maps, codes)  # [H, n, d_model]
        mean = contrib @ mu  # [H, n]
        std = ((contrib @ sigma) * contrib).sum(-1).clamp_min(1e-24).sqrt()  # [H, n]
        z = (contrib @ concept_rows.T - mean[..., None]) / std[..., None]  # [H, n, c]
        scores[layer] = z.mean(-1).mean(-1).float()
    empty = torch.zeros(sites.n_layers, sites.n_heads, 0, dtype=torch.long)
    return HeadRanking(
        concept=concept,
        scores=scores,
        evr=torch.full_like(scores, float("nan")),
        support=empty,
        n_atoms=0,
        criterion="logit_lens",
        model_id=activations.model_id,
        fingerprint=activations.fingerprint,
        token_ids=rows.tolist(),
    )


def select_ranking(
    method: str,
    activations: Activations,
    sites,
    token_ids: Sequence[int],
    *,
    concept: str = "concept",
    window: tuple[int, int] | None = None,
    n_atoms: int = 10,
    n_random: int = 5,
    seed: int = 0,
    candidate_ids: Sequence[int] | None = None,
) -> HeadRanking:
    """Rank heads with one of :data:`METHODS`, then apply the layer window.

    ``candidate_ids`` is the random-token pool of ``"specificity"`` (see
    :func:`specificity_ranking`)."""
    if method == "evr":
        ranking = rank_heads(activations, sites, token_ids, concept=concept, n_atoms=n_atoms)
    elif method == "specificity":
        ranking = specificity_ranking(
            activations,
            sites,
            token_ids,
            concept=concept,
            n_atoms=n_atoms,
            n_random=n_random,
            seed=seed,
            candidate_ids=candidate_ids,
        )
    elif method == "logit_lens":
        ranking = logit_lens_ranking(activations, sites, token_ids, concept=concept)
    else:
        raise ValueError(f"Unknown selection method {method!r}; choose one of {METHODS}.")
    return apply_window(ranking, window)


def heads_for_percent(percent: float, n_heads_total: int) -> int:
    """``round(percent% of heads)``, at least 1."""
    return max(1, round(percent / 100 * n_heads_total))


def parse_intervention(spec: str | float) -> tuple[str, float]:
    """``"mean"`` -> ("mean", 1.0); ``"-1"`` -> ("scale", -1.0)."""
    if isinstance(spec, str) and spec.strip().lower() in ("mean", "mean-ablation", "mean_ablation"):
        return "mean", 1.0
    try:
        return "scale", float(spec)
    except ValueError as error:
        raise ValueError(f"Intervention {spec!r} is neither a number (α) nor 'mean'.") from error


def intervention_name(spec: str | float) -> str:
    mode, alpha = parse_intervention(spec)
    return "mean" if mode == "mean" else f"{alpha:g}"


@torch.inference_mode()
def random_controls(
    selected: Sequence[Head], n_layers: int, n_heads: int, *, seed: int = 0
) -> list[Head]:
    """Matched random controls, disjoint from ``selected``; when a layer holds too many
    selected heads for that, the overflow comes from the nearest layers (see
    :func:`~headpursuit.matched_controls` with ``overflow="nearest"``)."""
    return matched_controls(selected, n_layers, n_heads, seed=seed, overflow="nearest")


@dataclass
class Condition:
    """One evaluated arm: which heads, how many, how they were intervened on."""

    arm: str  # "baseline", "selected", "logit_lens", "random"
    k: int
    intervention: str
    seed: int | None
    heads: list[Head]


def run_conditions(
    loaded: LoadedModel,
    selected: HeadRanking,
    lens: HeadRanking,
    evaluate: Callable[[], dict[str, float]],
    *,
    ks: Sequence[int],
    interventions: Sequence[str],
    control_seeds: Sequence[int],
    mean_output: torch.Tensor,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, float], list[tuple[Condition, dict[str, float]]]]:
    """Evaluate the unmodified model, then every (k, intervention, arm) condition.

    Args:
        evaluate: runs the task on the (possibly steered) model and returns metrics.
        mean_output: ``[n_layers, n_heads, head_dim]`` mean head outputs for "mean" mode.

    Returns:
        (baseline metrics, [(condition, metrics), ...]).
    """
    from ..architectures import AttentionSites

    sites = AttentionSites(loaded.model)
    # Every arm is drawn before anything runs, so an impossible one fails fast.
    arms_by_k: dict[int, list[tuple[str, int | None, list[Head]]]] = {}
    for k in ks:
        chosen = selected.top(k)
        arms_by_k[k] = [("selected", None, chosen), ("logit_lens", None, lens.top(k))]
        arms_by_k[k] += [
            ("random", s, random_controls(chosen, sites.n_layers, sites.n_heads, seed=s))
            for s in control_seeds
        ]
    baseline = evaluate()
    rows: list[tuple[Condition, dict[str, float]]] = []
    for k in ks:
        arms = arms_by_k[k]
        for spec in interventions:
            mode, alpha = parse_intervention(spec)
            replacement = mean_output if mode == "mean" else None
            for arm, seed, heads in arms:
                with steer(loaded.model, heads, alpha, replacement=replacement, sites=sites):
                    metrics = evaluate()
                condition = Condition(arm, k, intervention_name(spec), seed, heads)
                rows.append((condition, metrics))
                if log is not None:
                    shown = " ".join(
                        f"{key}={value:.3f}" for key, value in metrics.items() if key[0] != "_"
                    )
                    log(
                        f"k={k} {condition.intervention} {arm}{'' if seed is None else seed}: {shown}"
                    )
    return baseline, rows


@dataclass
class TaskResult:
    """Results of one task run.

    Attributes:
        task: "qa", "wordfreq" or "amplify".
        concept: the concept whose heads were selected.
        config: every setting of the run (JSON-serialisable).
        baseline: metrics of the unmodified model.
        rows: one dict per condition: arm, k, intervention, seed, heads, raw metrics, and
            ``<metric>_norm`` = metric / baseline metric (``nan`` when the baseline is 0).
        metrics: names of the metrics, the first being the task's target metric.
    """

    task: str
    concept: str
    config: dict
    baseline: dict[str, float]
    rows: list[dict]
    metrics: list[str]

    @classmethod
    def build(
        cls,
        task: str,
        concept: str,
        config: dict,
        baseline: dict[str, float],
        conditions: list[tuple[Condition, dict[str, float]]],
    ) -> TaskResult:
        metrics = list(baseline)
        rows = [_row("baseline", 0, "none", None, [], baseline, baseline)]
        rows += [
            _row(c.arm, c.k, c.intervention, c.seed, c.heads, values, baseline)
            for c, values in conditions
        ]
        return cls(task, concept, config, baseline, rows, metrics)

    def to_frame(self):
        """A pandas DataFrame, one row per condition (baseline first)."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def summary(self):
        """Mean and std over control seeds: one row per (k, intervention, arm)."""
        frame = self.to_frame()
        columns = [c for c in frame.columns if c in self.metrics or c.endswith("_norm")]
        grouped = frame.groupby(["k", "intervention", "arm"], sort=False)[columns]
        mean = grouped.mean()
        std = grouped.std(ddof=0).add_suffix("_std")
        return mean.join(std).reset_index()

    def to_json(self) -> dict:
        return {
            "task": self.task,
            "concept": self.concept,
            "config": self.config,
            "baseline": self.baseline,
            "metrics": self.metrics,
            "rows": self.rows,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the results JSON atomically."""
        return write_json(path, self.to_json())


def _row(
    arm: str,
    k: int,
    intervention: str,
    seed: int | None,
    heads: list[Head],
    values: dict[str, float],
    baseline: dict[str, float],
) -> dict:
    row: dict = {
        "arm": arm,
        "k": k,
        "intervention": intervention,
        "seed": seed,
        "heads": " ".join(str(h) for h in heads),
    }
    for name, value in values.items():
        row[name] = value
        base = baseline[name]
        row[f"{name}_norm"] = value / base if base else float("nan")
    return row
