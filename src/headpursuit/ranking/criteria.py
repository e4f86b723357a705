"""Rank every head for a concept under one named criterion: the one implementation.

Criteria (:data:`CRITERIA`), each a ``[n_layers, n_heads]`` score, higher = more specialised:

* ``"evr"`` -- the paper's criterion: SOMP over the unembedding rows of the concept's
  tokens; the score is the explained variance ratio after ``n_atoms`` atoms.
* ``"specificity"`` -- ``evr`` minus the mean EVR the same head gets from ``n_random``
  dictionaries of the same size drawn, without replacement and seeded, from a pool of
  real-word tokens with the concept's tokens removed. Heads that any token dictionary
  explains well (with tied embeddings: early heads that copy token embeddings) score
  near zero.
* ``"logit_lens"`` -- the paper's baseline: each sample's top ``per_sample`` tokens of the
  head's logits (its residual contribution read through the raw unembedding); the score
  is the share of those ``n * per_sample`` tokens that are concept tokens.
* ``"logit_lens_z"`` -- a continuous variant: the concept tokens' logits z-scored over the
  vocabulary, averaged over samples.

An optional layer window ``(first, last)`` restricts which heads can be chosen.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..activations.store import AnyActivations
from ..errors import InputError
from ..models.architectures import AttentionSites
from ..protocol import DEFAULT_CRITERION
from .head_ranking import HeadRanking, check_window, head_somp

CRITERIA = ("evr", "specificity", "logit_lens", "logit_lens_z")
DEFAULT_N_RANDOM = 10


def _check_token_ids(token_ids: Sequence[int], vocab: int) -> torch.Tensor:
    rows = sorted({int(t) for t in token_ids})
    if not rows:
        raise InputError("The concept has no tokens.")
    bad = [t for t in rows if not 0 <= t < vocab]
    if bad:
        raise InputError(f"Token ids {bad[:5]} are outside the dictionary (size {vocab}).")
    return torch.tensor(rows)


def concept_evr(
    activations: AnyActivations,
    sites: AttentionSites,
    dictionary: torch.Tensor,
    rows: torch.Tensor,
    n_atoms: int,
    *,
    center: bool = True,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concept-restricted SOMP of every head: (EVR ``[L, H]``, support ``[L, H, k]`` token ids)."""
    k = min(n_atoms, len(rows))
    result = head_somp(activations, sites, dictionary[rows], k, center=center, progress=progress)
    shape = (sites.n_layers, sites.n_heads)
    return result.final_evr.reshape(shape), rows[result.support].reshape(*shape, k)


def random_dictionary_evr(
    activations: AnyActivations,
    sites: AttentionSites,
    dictionary: torch.Tensor,
    size: int,
    pool: Sequence[int],
    n_atoms: int,
    *,
    n_random: int = DEFAULT_N_RANDOM,
    seed: int = 0,
    center: bool = True,
) -> torch.Tensor:
    """``[n_random, L, H]`` EVRs of SOMP over random same-size dictionaries drawn from ``pool``.

    Draw ``r`` is ``pool[torch.randperm(len(pool), generator=Generator().manual_seed(seed + r))[:size]]``.
    """
    pool_t = torch.tensor(sorted({int(t) for t in pool}))
    if len(pool_t) < size:
        raise InputError(
            f"The random-token pool has {len(pool_t)} tokens, fewer than the concept's {size}."
        )
    values = []
    for draw in range(n_random):
        generator = torch.Generator().manual_seed(seed + draw)
        rows = pool_t[torch.randperm(len(pool_t), generator=generator)[:size]].sort().values
        evr, _ = concept_evr(activations, sites, dictionary, rows, n_atoms, center=center)
        values.append(evr)
    return torch.stack(values)


@torch.inference_mode()
def logit_lens_top_tokens(
    activations: AnyActivations,
    sites: AttentionSites,
    unembedding: torch.Tensor,
    *,
    per_sample: int = 5,
    block: int = 8192,
) -> torch.Tensor:
    """``[L, H, n, per_sample]`` ids of each sample's highest logits for every head.

    For head (l, h) and sample i the logits are ``H_i @ U.T`` (``[vocab]``, raw unembedding),
    computed in head space (``z_i @ (U M_h).T``) with the vocabulary in blocks, keeping a
    running top ``per_sample``. They do not depend on any concept, so one call serves the
    logit-lens ranking of every concept (``rank_heads(..., lens_top_tokens=...)``). Heads
    that a layer does not have (per-layer head counts) get ids ``-1``.
    """
    n = activations.n_samples
    out = torch.full((sites.n_layers, sites.n_heads, n, per_sample), -1, dtype=torch.long)
    for layer in range(sites.n_layers):
        maps = sites.head_matrices(layer).float()  # [H, d, r]
        codes = activations.layer_codes(layer)  # [n, H, r]
        n_heads = maps.shape[0]
        codes = codes[:, :n_heads, : maps.shape[-1]].transpose(0, 1)  # [H, n, r]
        best_values = torch.full((n_heads, n, per_sample), -torch.inf)
        best_ids = torch.zeros(n_heads, n, per_sample, dtype=torch.long)
        for start in range(0, unembedding.shape[0], block):
            part = torch.einsum("bd,hdr->hbr", unembedding[start : start + block].float(), maps)
            logits = codes @ part.transpose(1, 2)  # [H, n, b]
            top = torch.topk(logits, min(per_sample, logits.shape[-1]), dim=-1)
            values = torch.cat([best_values, top.values], -1)
            ids = torch.cat([best_ids, top.indices + start], -1)
            keep = torch.topk(values, per_sample, dim=-1)
            best_values, best_ids = keep.values, ids.gather(-1, keep.indices)
        out[layer, :n_heads] = best_ids
    return out


def logit_lens_scores(
    activations: AnyActivations,
    sites: AttentionSites,
    unembedding: torch.Tensor,
    rows: torch.Tensor,
    *,
    per_sample: int = 5,
    top_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """The paper's logit-lens share ``[L, H]``: concept tokens among each sample's top logits.

    The score of head (l, h) is ``#{(i, j): token j of sample i's top per_sample is a
    concept token} / (n * per_sample)``; ``top_tokens`` is :func:`logit_lens_top_tokens`
    if already computed for these activations.
    """
    if top_tokens is None:
        top_tokens = logit_lens_top_tokens(activations, sites, unembedding, per_sample=per_sample)
    concept = torch.zeros(unembedding.shape[0] + 1, dtype=torch.bool)  # the extra slot is id -1
    concept[rows] = True
    return concept[top_tokens].double().mean((-1, -2))


@torch.inference_mode()
def logit_lens_z_scores(
    activations: AnyActivations,
    sites: AttentionSites,
    unembedding: torch.Tensor,
    rows: torch.Tensor,
) -> torch.Tensor:
    """``[L, H]`` mean over samples of the concept tokens' vocabulary-z-scored logits.

    The mean and variance of ``h @ U.T`` over the vocabulary are ``h · μ`` and ``hᵀ Σ h``
    (μ, Σ: mean and covariance of U's rows), so the ``[vocab]`` logits are never formed.
    """
    unembedding = unembedding.double()
    mu = unembedding.mean(0)
    centred = unembedding - mu
    sigma = centred.T @ centred / (unembedding.shape[0] - 1)
    concept_rows = unembedding[rows]
    scores = torch.zeros(sites.n_layers, sites.n_heads, dtype=torch.float64)
    for layer in range(sites.n_layers):
        maps = sites.head_matrices(layer).double()  # [H, d, r]
        codes = activations.layer_codes(layer).double()  # [n, H, r]
        contrib = torch.einsum("hdk,nhk->hnd", maps, codes)  # [H, n, d]
        mean = contrib @ mu
        std = ((contrib @ sigma) * contrib).sum(-1).clamp_min(1e-24).sqrt()
        z = (contrib @ concept_rows.T - mean[..., None]) / std[..., None]
        scores[layer] = z.mean(-1).mean(-1)
    return scores


def rank_heads(
    activations: AnyActivations,
    sites: AttentionSites,
    token_ids: Sequence[int],
    *,
    criterion: str = DEFAULT_CRITERION,
    concept: str = "concept",
    n_atoms: int = 10,
    n_random: int = DEFAULT_N_RANDOM,
    random_pool: Sequence[int] | None = None,
    seed: int = 0,
    layers: tuple[int, int] | None = None,
    per_sample: int = 5,
    lens_top_tokens: torch.Tensor | None = None,
    center: bool = True,
    fold_final_norm: bool = False,
    progress: bool = False,
) -> HeadRanking:
    """Score every head for a concept under ``criterion`` (see the module doc).

    Args:
        activations: pooled ``z`` ``[n, L, H, head_dim]`` from :func:`~headpursuit.capture`,
            or opened shard by shard with :meth:`~headpursuit.Activations.open`.
        sites: the model's attention sites (W_O slices, the ``[vocab, d_model]`` unembedding).
        token_ids: the concept's dictionary rows (:func:`~headpursuit.resolve_concept`).
        n_atoms: SOMP atoms per head (capped at the number of concept tokens).
        n_random, random_pool, seed: the random dictionaries of ``"specificity"``; the pool
            defaults to every vocabulary row; :func:`~headpursuit.ranking.concepts.word_token_ids`
            gives the real-word pool the CLI and the tasks use. Concept tokens are removed.
        layers: inclusive layer window ``(first, last)`` of heads that may be chosen.
        per_sample: the logit lens's top tokens per sample.
        lens_top_tokens: :func:`logit_lens_top_tokens` of these activations, if already
            computed (they serve every concept; the costly part of ``"logit_lens"``).
        fold_final_norm: fold the final norm's gain into the dictionary (off, as in the paper).

    Returns:
        :class:`HeadRanking`; for the SOMP criteria ``evr``/``support`` hold the concept SOMP,
        for ``"specificity"`` ``tables["random_evr"]`` the mean random-dictionary EVR.
    """
    if criterion not in CRITERIA:
        raise InputError(f"Unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}.")
    if n_atoms < 1:
        raise InputError(f"n_atoms must be at least 1, got {n_atoms}.")
    if n_random < 1:
        raise InputError(f"n_random must be at least 1, got {n_random}.")
    window = check_window(layers, sites.n_layers)
    activations.check_model(sites)
    activations.check_distinct()
    dictionary = sites.dictionary(fold_final_norm=fold_final_norm)
    rows = _check_token_ids(token_ids, dictionary.shape[0])
    shape = (sites.n_layers, sites.n_heads)
    evr = torch.full(shape, float("nan"), dtype=torch.float64)
    support = torch.zeros(*shape, 0, dtype=torch.long)
    tables: dict[str, torch.Tensor] = {}
    settings: dict = {
        "center": center,
        "fold_final_norm": fold_final_norm,
        "n_samples": activations.n_samples,
    }
    k = 0
    if criterion in ("evr", "specificity"):
        evr, support = concept_evr(
            activations, sites, dictionary, rows, n_atoms, center=center, progress=progress
        )
        k = support.shape[-1]
        scores = evr.clone()
    if criterion == "specificity":
        pool = range(dictionary.shape[0]) if random_pool is None else random_pool
        pool = sorted(set(int(t) for t in pool) - set(rows.tolist()))
        random_evr = random_dictionary_evr(
            activations,
            sites,
            dictionary,
            len(rows),
            pool,
            n_atoms,
            n_random=n_random,
            seed=seed,
            center=center,
        )
        tables["random_evr"] = random_evr.mean(0)
        scores = evr - tables["random_evr"]
        settings.update(
            n_random=n_random,
            seed=seed,
            pool_size=len(pool),
            pool="given" if random_pool is not None else "all vocabulary rows",
        )
    elif criterion == "logit_lens":
        scores = logit_lens_scores(
            activations,
            sites,
            sites.unembedding(),
            rows,
            per_sample=per_sample,
            top_tokens=lens_top_tokens,
        )
        settings.update(per_sample=per_sample)
    elif criterion == "logit_lens_z":
        scores = logit_lens_z_scores(activations, sites, sites.unembedding(), rows)
    return HeadRanking(
        concept=concept,
        criterion=criterion,
        scores=scores.double(),
        evr=evr.double(),
        support=support,
        n_atoms=k,
        model_id=activations.model_id,
        fingerprint=activations.fingerprint,
        token_ids=rows.tolist(),
        layers=window,
        tables={name: t.double() for name, t in tables.items()},
        settings=settings,
    )
