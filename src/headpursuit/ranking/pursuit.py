"""Simultaneous Orthogonal Matching Pursuit over a dictionary, and the logit-lens baseline.

Pure tensor math: nothing here knows about models.

SOMP (Tropp, Gilbert & Strauss, 2006) approximates a signal matrix H ``[n, d]`` by
``W @ D[S]`` with a support S of k dictionary rows chosen greedily. Step t scores every
unselected atom j by the ℓ1 norm of its correlations with the residual,
``score_j = Σ_i |(R Dᵀ)_ij|``, adds the best, refits W by least squares on the whole
support, and records ``EVR_t = 1 - ‖R_t‖²_F / ‖H‖²_F``.

The implementation here is exact (same atoms as the textbook loop, EVR to float64
round-off) but never forms ``R Dᵀ`` in full:

* With Q an orthonormal basis of the selected atoms, ``R = H (I - Q Qᵀ)``, so the residual
  correlations of atom j are ``c_j = H d_j - A (Qᵀ d_j)`` with ``A = H Q`` (``[n, t]``).
* Heads are low rank: ``H = Z Mᵀ`` with Z the pooled head-space outputs ``[n, r]`` and M the
  head's output map ``[d, r]`` (r = head_dim). So ``H d_j = Z g_j`` with ``G = D M``
  ``[v, r]``, computed once; ``‖c_j‖₂²`` is then a quadratic form in ``r + t`` numbers.
* ``‖c_j‖₁ ≤ √n ‖c_j‖₂`` bounds every atom's score at the cost of a few flops per atom,
  and a score computed exactly at an earlier step bounds it later by the triangle
  inequality (it moves by at most ``Σ_s |q_sᵀ d_j| ‖H q_s‖₁``). Only atoms whose bound can
  beat the best exact score found so far get their exact ℓ1 score computed, in blocks in
  decreasing order of bound; the step ends when no bound exceeds the best exact score.
* Scores are computed in float32; when two atoms are within 1e-4 (relative) of the best,
  they are rescored in float64 so that round-off never decides a choice.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

_TIE_RTOL = 1e-4
_BOUND_MARGIN = 1e-4
_FIRST_BLOCK = 64


@dataclass
class SOMPResult:
    """Result of SOMP on a batch of B signal matrices.

    Attributes:
        support: ``[B, k]`` selected dictionary rows, in selection order.
        evr: ``[B, k]`` explained variance ratio after each step (float64).
        coefficients: ``[B, n, k]`` least-squares coefficients on the final support, in
            support order, for the (centred, if ``center``) signals and the normalised atoms.
        n_exact_scores: how many exact ℓ1 scores were computed (diagnostic).
    """

    support: torch.Tensor
    evr: torch.Tensor
    coefficients: torch.Tensor
    n_exact_scores: int = 0

    @property
    def final_evr(self) -> torch.Tensor:
        """``[B]`` EVR with all k atoms."""
        return self.evr[:, -1]


def normalize_rows(dictionary: torch.Tensor) -> torch.Tensor:
    """L2-normalise the rows of ``[v, d]``; zero rows stay zero."""
    norms = dictionary.norm(dim=-1, keepdim=True)
    return dictionary / norms.clamp_min(torch.finfo(dictionary.dtype).tiny)


def somp(
    signals: torch.Tensor,
    dictionary: torch.Tensor,
    n_atoms: int,
    *,
    center: bool = True,
    normalize: bool = True,
) -> SOMPResult:
    """SOMP of signal matrices over a dictionary.

    Args:
        signals: ``[n, d]`` or ``[B, n, d]``.
        dictionary: ``[v, d]`` atoms as rows (e.g. the unembedding matrix).
        n_atoms: k, the number of atoms to select (≤ v).
        center: subtract each signal matrix's mean over samples first.
        normalize: L2-normalise the atoms (the ℓ1 criterion is scale-sensitive).
    """
    batched = signals if signals.dim() == 3 else signals[None]
    return somp_factored(batched, None, dictionary, n_atoms, center=center, normalize=normalize)


def somp_factored(
    codes: torch.Tensor,
    maps: torch.Tensor | None,
    dictionary: torch.Tensor,
    n_atoms: int,
    *,
    center: bool = True,
    normalize: bool = True,
    heads_per_chunk: int = 32,
    progress: bool = False,
) -> SOMPResult:
    """SOMP of B low-rank signal matrices ``H_b = codes_b @ maps_bᵀ`` over one dictionary.

    Args:
        codes: ``[B, n, r]`` (e.g. pooled head outputs, r = head_dim).
        maps: ``[B, d, r]`` (e.g. each head's slice of W_O), or ``None`` for the identity
            (then ``codes`` are the signals themselves, r = d).
        dictionary: ``[v, d]``.
        n_atoms: k ≤ v atoms per signal matrix.
        center, normalize: as in :func:`somp`.
        heads_per_chunk: signal matrices processed together (bounds memory: each holds a
            ``[v, r]`` float32 correlation factor).
        progress: show a progress bar over signal matrices.
    """
    n_batch, n_samples, rank = codes.shape
    vocab, width = dictionary.shape
    if maps is not None and maps.shape != (n_batch, width, rank):
        raise ValueError(f"maps must be [{n_batch}, {width}, {rank}], got {list(maps.shape)}.")
    if maps is None and rank != width:
        raise ValueError(f"signals have width {rank} but the dictionary has width {width}.")
    if not 1 <= n_atoms <= vocab:
        raise ValueError(
            f"n_atoms must be between 1 and the dictionary size {vocab}, got {n_atoms}."
        )
    atoms = normalize_rows(dictionary.float()) if normalize else dictionary.float()
    support = torch.zeros(n_batch, n_atoms, dtype=torch.long)
    evr = torch.zeros(n_batch, n_atoms, dtype=torch.float64)
    coefficients = torch.zeros(n_batch, n_samples, n_atoms, dtype=torch.float64)
    n_exact = 0
    bar = tqdm(total=n_batch, desc="SOMP", unit="head", disable=not progress)
    for start in range(0, n_batch, heads_per_chunk):
        chunk = range(start, min(start + heads_per_chunk, n_batch))
        chunk_maps = None if maps is None else maps[chunk.start : chunk.stop].float()
        # The one-time products G = D M, one [v, r] factor per signal matrix.
        if chunk_maps is None:
            factors = atoms.expand(len(chunk), vocab, width)
        else:  # one GEMM [v, d] @ [d, C*r], then per-head contiguous [v, r] blocks
            stacked = atoms @ chunk_maps.permute(1, 0, 2).reshape(width, -1)
            factors = stacked.view(vocab, len(chunk), rank).permute(1, 0, 2).contiguous()
        # The per-head work below is many small vector operations: with several threads
        # each pays a synchronisation (ruinous on a busy machine); the GEMMs stay parallel.
        chunk_codes = codes[chunk.start : chunk.stop].double()
        if center:
            chunk_codes = chunk_codes - chunk_codes.mean(1, keepdim=True)
        grams = chunk_codes.transpose(1, 2) @ chunk_codes  # [C, r, r]
        # ‖H d_j‖² = g_jᵀ (ZᵀZ) g_j for every atom and head, batched.
        initial_sq = ((torch.matmul(factors, grams.float())) * factors).sum(-1)  # [C, v]
        with _single_thread():
            states = [
                _PursuitState(
                    chunk_codes[offset],
                    grams[offset],
                    None if chunk_maps is None else chunk_maps[offset].double(),
                    factors[offset],
                    initial_sq[offset],
                    atoms,
                    n_atoms,
                )
                for offset in range(len(chunk))
            ]
        for _ in range(n_atoms):
            with _single_thread():
                for state in states:
                    state.select()
                # Per head: the new direction q and u = M Zᵀ (H q), both in R^d.
                vectors = torch.stack(
                    [state.last_direction for state in states]
                    + [state.last_cross_vector for state in states],
                    1,
                ).float()
            # Lockstep: one GEMM gives D q (for p_j) and D u (= G Zᵀ H q) for every head.
            products = atoms @ vectors  # [v, 2C]
            with _single_thread():
                for offset, state in enumerate(states):
                    state.absorb(products[:, offset], products[:, len(states) + offset])
        with _single_thread():
            for offset, b in enumerate(chunk):
                state = states[offset]
                support[b] = torch.tensor(state.selected)
                evr[b] = torch.tensor(state.evr)
                coefficients[b] = state.coefficients()
                n_exact += state.n_exact
        bar.update(len(chunk))
    bar.close()
    return SOMPResult(support, evr, coefficients, n_exact)


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch ops on one CPU thread inside the block."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _PursuitState:
    """SOMP on one signal matrix H = code @ mapᵀ, bound-and-score style (see module doc)."""

    def __init__(
        self,
        code: torch.Tensor,
        gram: torch.Tensor,
        map64: torch.Tensor | None,
        factor: torch.Tensor,
        initial_sq: torch.Tensor,
        atoms: torch.Tensor,
        n_atoms: int,
    ):
        self.code64 = code  # [n, r] float64, centred if asked
        self.map64 = map64  # [d, r] float64 or None (identity)
        self.code = code.float()
        self.factor = factor  # G = D M, [v, r] float32
        self.atoms = atoms  # [v, d] float32, rows cast to float64 when needed
        n, _ = code.shape
        vocab = factor.shape[0]
        self.n = n
        self.total = float(
            torch.trace(gram) if map64 is None else torch.trace(map64.T @ map64 @ gram)
        )
        # ‖H d_j‖² = g_jᵀ (ZᵀZ) g_j; later steps subtract the selected directions' share.
        self.initial_sq = initial_sq  # ‖H d_j‖², [v]
        self.sq_norm = initial_sq  # ‖R d_j‖² = initial − 2 cross_sum + quad
        self.sq_scale = initial_sq  # magnitude of the terms summed into sq_norm
        self.cross_sum = torch.zeros(vocab)  # Σ_s (G Zᵀ A)_js p_js
        self.cross_abs = torch.zeros(vocab)
        self.quad = torch.zeros(vocab)  # p_jᵀ (AᵀA) p_j
        self.exact = torch.full((vocab,), math.inf)  # exact ℓ1 score at some earlier step
        self.drift = torch.zeros(vocab)  # bound on how far it can have moved since
        self.basis: list[torch.Tensor] = []  # q_s in R^d, float64
        self.images64 = torch.zeros(n, n_atoms, dtype=torch.float64)  # A = H Q
        self.images = torch.zeros(n, n_atoms)
        # Row s holds atom-wise values for direction s (rows are contiguous in memory).
        self.projections = torch.zeros(n_atoms, vocab)  # (D Q)ᵀ
        self.selected: list[int] = []
        self.evr: list[float] = []
        self.explained = 0.0
        self.n_exact = 0
        self.last_direction = torch.zeros(atoms.shape[1], dtype=torch.float64)
        self.last_cross_vector = torch.zeros(atoms.shape[1], dtype=torch.float64)

    def _exact_scores(self, rows: torch.Tensor) -> torch.Tensor:
        """ℓ1 norms of the residual correlations of atoms ``rows`` (float32)."""
        self.n_exact += rows.numel()
        corr = self.code @ self.factor[rows].T  # [n, m]
        t = len(self.selected)
        if t:
            corr = corr - self.images[:, :t] @ self.projections[:t, rows]
        return corr.abs().sum(0)

    def _exact_scores64(self, rows: torch.Tensor) -> torch.Tensor:
        signals = self.code64 if self.map64 is None else self.code64 @ self.map64.T  # [n, d]
        atoms = self.atoms[rows].double()  # [m, d]
        for q in self.basis:
            atoms = atoms - (atoms @ q)[:, None] * q[None]
        return (signals @ atoms.T).abs().sum(0)

    def _score(self, rows: torch.Tensor, bound: torch.Tensor, exact_now: torch.Tensor) -> None:
        scores = self._exact_scores(rows)
        bound[rows] = scores
        self.exact[rows] = scores
        self.drift[rows] = 0.0
        exact_now[rows] = True

    def select(self) -> None:
        """Pick the next atom: exact ℓ1 argmax, scoring only atoms whose bound can win."""
        # The float32 quadratic form can cancel; the margin covers its round-off.
        sq_bound = self.sq_norm.clamp_min(0) + _BOUND_MARGIN * self.sq_scale
        bound = torch.minimum((self.n * sq_bound).sqrt(), self.exact + self.drift)
        exact_now = torch.zeros_like(bound, dtype=torch.bool)
        if self.selected:
            bound[self.selected] = -math.inf
            exact_now[self.selected] = True
        block = _FIRST_BLOCK
        while True:
            top = torch.topk(bound, min(block, bound.numel())).indices
            fresh = top[~exact_now[top]]
            if fresh.numel():
                self._score(fresh, bound, exact_now)
            best = int(torch.argmax(bound))
            if exact_now[best]:
                break
            block *= 2
        # Float64 tie-break among every atom that could be within round-off of the best.
        threshold = bound[best] * (1 - _TIE_RTOL)
        contenders = (bound >= threshold).nonzero()[:, 0]
        unscored = contenders[~exact_now[contenders]]
        if unscored.numel():
            self._score(unscored, bound, exact_now)
            contenders = (bound >= threshold).nonzero()[:, 0]
        if contenders.numel() > 1:
            best = int(contenders[torch.argmax(self._exact_scores64(contenders))])
        self._add(best)

    def _add(self, atom: int) -> None:
        direction = self.atoms[atom].double()
        for _ in range(2):  # Gram-Schmidt twice, for orthogonality to round-off
            for q in self.basis:
                direction = direction - (direction @ q) * q
        norm = direction.norm()
        direction = direction / norm if norm > 0 else direction
        t = len(self.selected)
        self.basis.append(direction)
        reduced = direction if self.map64 is None else self.map64.T @ direction  # [r]
        image = self.code64 @ reduced  # H q, [n]
        self.images64[:, t] = image
        self.images[:, t] = image.float()
        self.explained += float(image @ image)
        self.selected.append(atom)
        self.evr.append(self.explained / self.total if self.total > 0 else 0.0)
        self.last_direction = direction
        ztz_q = self.code64.T @ image  # Zᵀ H q, [r]
        self.last_cross_vector = ztz_q if self.map64 is None else self.map64 @ ztz_q

    def absorb(self, projection: torch.Tensor, cross: torch.Tensor) -> None:
        """Take ``D q`` and ``D u = G Zᵀ H q`` for the newest direction; update the bounds.

        With A = H Q and p_j = Qᵀ d_j: ‖c_j‖² = ‖Z g_j − A p_j‖²
        = g_jᵀ (ZᵀZ) g_j − 2 Σ_s (G Zᵀ A)_js p_js + p_jᵀ (AᵀA) p_j; each step adds its
        terms to the running sums, so the update is O(t · v).
        """
        step = len(self.selected) - 1
        self.projections[step] = projection
        image = self.images[:, step]
        gram_column = self.images[:, : step + 1].T @ image  # (AᵀA)[:, step]
        term = cross * projection
        self.cross_sum += term
        self.cross_abs += term.abs()
        earlier = gram_column[:step] @ self.projections[:step] if step else 0.0
        self.quad += projection * (2 * earlier + gram_column[step] * projection)
        self.sq_norm = self.initial_sq - 2 * self.cross_sum + self.quad
        self.sq_scale = self.initial_sq + 2 * self.cross_abs + self.quad
        self.drift += projection.abs() * float(image.abs().sum())

    def coefficients(self) -> torch.Tensor:
        """Least-squares coefficients ``[n, k]`` of H on the selected (normalised) atoms."""
        chosen = self.atoms[self.selected].double()  # [k, d]
        signals = self.code64 if self.map64 is None else self.code64 @ self.map64.T
        return torch.linalg.lstsq(chosen.T, signals.T).solution.T


def logit_lens(
    signals: torch.Tensor,
    dictionary: torch.Tensor,
    *,
    per_sample: int = 5,
    n_tokens: int = 5,
    normalize: bool = False,
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The paper's multi-sample logit-lens baseline.

    Each sample's top ``per_sample`` dictionary rows by logit ``h_i · d_j``; then the
    ``n_tokens`` rows most frequent across samples (ties: first seen).

    Args:
        signals: ``[n, d]``.
        dictionary: ``[v, d]`` (the raw unembedding; ``normalize`` for unit rows).

    Returns:
        ``([n, per_sample]`` per-sample top rows, ``[(row, count), ...]`` most frequent).
    """
    atoms = normalize_rows(dictionary.float()) if normalize else dictionary.float()
    logits = signals.float() @ atoms.T
    top = torch.topk(logits, per_sample, dim=-1).indices
    counts = Counter(top.reshape(-1).tolist())
    return top, counts.most_common(n_tokens)
