"""Simultaneous Orthogonal Matching Pursuit over a dictionary, and the logit-lens baseline.

Pure tensor math: nothing here knows about models. Everything runs on one chosen device
(CPU or GPU); inside the loops only scalars for loop control come back to the host.

SOMP (Tropp, Gilbert & Strauss, 2006) approximates a signal matrix H ``[n, d]`` by
``W @ D[S]`` with a support S of k dictionary rows chosen greedily. Step t scores every
unselected atom j by the ℓ1 norm of its correlations with the residual,
``score_j = Σ_i |(R Dᵀ)_ij|``, adds the best, refits W by least squares on the whole
support, and records ``EVR_t = 1 - ‖R_t‖²_F / ‖H‖²_F``.

The implementation here is exact (the atoms of the float64 textbook loop, EVR to float64
round-off) but never forms ``R Dᵀ``, and holds no ``[v, ·]`` tensor per head beyond a few
``[v]`` vectors (the dictionary is read in blocks of rows):

* Heads are low rank: ``H = Z Mᵀ`` with Z the pooled head-space outputs ``[n, r]`` and M the
  head's output map ``[d, r]`` (r = head_dim). With ``Z = U R`` (thin QR, U orthonormal)
  ``H = U M'ᵀ`` where ``M' = M Rᵀ``, and with Q an orthonormal basis of the selected atoms
  the residual correlations of atom j are ``c_j = U y_j``, ``y_j = M'ᵀ (I - Q Qᵀ) d_j``.
* ``‖c_j‖₁ ≤ √n ‖y_j‖₂`` bounds every atom's score. ``‖y_j‖²`` is computed once from
  ``D M'`` (one GEMM per block of the vocabulary) and then updated in O(v) per step:
  adding the direction q changes it by ``-2 (q·d_j)(ũ·d_j) + (q·d_j)² ‖M'ᵀq‖²``, and
  ``D [q, ũ]`` for all the heads of a chunk is one GEMM per step.
* A score computed exactly at an earlier step bounds it later by the triangle inequality:
  it moves by at most ``|q·d_j| ‖H q‖₁`` per step.
* Each step scores every atom whose bound reaches the best score found so far (in rounds
  of doubling size, best bound first): in float32 with a certified error interval, then in
  float64 for the few whose interval reaches the best lower bound; all other atoms
  provably score lower. The float32 bounds and intervals carry rigorous round-off margins
  derived from d and the data (docs/method.md, "Why the choice is exact"), so float32
  round-off can make them looser but never wrong, and never picks an atom.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

_FIRST_BLOCK = 32  # atoms per head scored exactly before the bounds are consulted
_BLOCK_BYTES = 32 << 20  # float32 temporaries of one block of the row-norm pass
_CACHE_BYTES = 16 << 20  # one-time product block, by default
_CHUNK_BYTES = 512 << 20  # per-chunk state (bounds, factors) when heads_per_chunk is None
_LENS_BLOCK = 8192  # dictionary rows per block of the logit lens
_SCORE_BUDGET = 1 << 21  # float64 elements per intermediate of the exact scores (16 MiB)
_K_BLOCK = 512  # inner-dimension block of the float32 products (bounds their round-off)
_NORM_BLOCK = 64  # inner-dimension block of the float32 row norms
_TIE = 2.0**-40  # float64 scores this close (relative) are equal: lowest index wins
_U32 = 2.0**-24  # unit round-off of IEEE float32
_U64 = 2.0**-53  # unit round-off of IEEE float64


@dataclass
class SOMPResult:
    """Result of SOMP on a batch of B signal matrices.

    Attributes:
        support: ``[B, k]`` selected dictionary rows, in selection order.
        evr: ``[B, k]`` explained variance ratio after each step (float64).
        coefficients: ``[B, n, k]`` least-squares coefficients on the final support, in
            support order, for the (centred, if ``center``) signals and the normalised atoms.
        n_exact_scores: how many ℓ1 scores were computed (diagnostic; in float32 with a
            certified error, and again in float64 for the few that could win).
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
    device: torch.device | str | None = None,
    vocab_block: int | None = None,
) -> SOMPResult:
    """SOMP of signal matrices over a dictionary.

    Args:
        signals: ``[n, d]`` or ``[B, n, d]``.
        dictionary: ``[v, d]`` atoms as rows (e.g. the unembedding matrix), any float dtype.
        n_atoms: k, the number of atoms to select (≤ v).
        center: subtract each signal matrix's mean over samples first.
        normalize: L2-normalise the atoms (the ℓ1 criterion is scale-sensitive).
        device: where to compute (default: the dictionary's device).
        vocab_block: dictionary rows per block in the streamed products (see
            :func:`somp_factored`).

    Returns:
        :class:`SOMPResult` with ``B`` rows (1 for a single ``[n, d]``), on the signals' device.
    """
    batched = signals if signals.dim() == 3 else signals[None]
    return somp_factored(
        batched,
        None,
        dictionary,
        n_atoms,
        center=center,
        normalize=normalize,
        device=device,
        vocab_block=vocab_block,
    )


def somp_factored(
    codes: torch.Tensor,
    maps: torch.Tensor | None,
    dictionary: torch.Tensor,
    n_atoms: int,
    *,
    center: bool = True,
    normalize: bool = True,
    heads_per_chunk: int | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    vocab_block: int | None = None,
) -> SOMPResult:
    """SOMP of B low-rank signal matrices ``H_b = codes_b @ maps_bᵀ`` over one dictionary.

    Args:
        codes: ``[B, n, r]`` (e.g. pooled head outputs, r = head_dim).
        maps: ``[B, d, r]`` (e.g. each head's slice of W_O), or ``None`` for the identity
            (then ``codes`` are the signals themselves, r = d).
        dictionary: ``[v, d]``, any float dtype; it is read in blocks of rows and never
            copied whole (a float32 copy of one block at a time at most).
        n_atoms: k ≤ v atoms per signal matrix.
        center, normalize: as in :func:`somp`.
        heads_per_chunk: signal matrices processed together in lockstep (one GEMM per
            step serves them all). Each holds three float32 ``[v]`` vectors (its bounds)
            and its float64 factors; ``None`` picks as many as fit in 512 MiB.
        progress: show a progress bar over signal matrices.
        device: where to compute (default: the dictionary's device); it needs float64
            (CPU, CUDA). The dictionary is moved there once if it is elsewhere (keeping its
            dtype); the results come back on ``codes``' device.
        vocab_block: dictionary rows per block in the streamed products: the temporaries
            are ``[vocab_block, heads_per_chunk * r]`` float32 (the one-time ``D M``) and
            ``[heads_per_chunk, vocab_block]`` (per step). ``None`` picks cache-sized blocks
            on the CPU (about 16 MiB for the one-time products, 1,024 rows per step) and
            16 times larger ones elsewhere.
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
    for name, value in (
        ("heads_per_chunk", heads_per_chunk),
        ("vocab_block", vocab_block),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive integer or None, got {value}.")
    if not dictionary.is_floating_point():
        raise ValueError(f"the dictionary must be a float tensor, got {dictionary.dtype}.")
    if not bool(torch.isfinite(codes).all()) or (
        maps is not None and not bool(torch.isfinite(maps).all())
    ):
        raise ValueError("the signals contain NaN or infinite values; SOMP needs finite inputs.")
    device = dictionary.device if device is None else torch.device(device)
    if device.type == "mps":
        raise ValueError(
            "SOMP's exact scores need float64, which MPS lacks; pass device='cpu' instead."
        )
    dictionary = dictionary.detach().to(device)
    atoms = _Atoms(dictionary, normalize, vocab_block)
    if heads_per_chunk is None:
        heads_per_chunk = _auto_chunk(n_batch, n_samples, rank, width, vocab, n_atoms)
    support = torch.zeros(n_batch, n_atoms, dtype=torch.long, device=codes.device)
    evr = torch.zeros(n_batch, n_atoms, dtype=torch.float64, device=codes.device)
    coefficients = torch.zeros(
        n_batch, n_samples, n_atoms, dtype=torch.float64, device=codes.device
    )
    n_exact = 0
    bar = tqdm(total=n_batch, desc="SOMP", unit="head", disable=not progress)
    with _ieee_float32_matmul():
        for start in range(0, n_batch, heads_per_chunk):
            stop = min(start + heads_per_chunk, n_batch)
            pursuit = _ChunkPursuit(
                codes[start:stop].detach().to(device=device, dtype=torch.float64),
                None
                if maps is None
                else maps[start:stop].detach().to(device=device, dtype=torch.float64),
                atoms,
                n_atoms,
                center,
                vocab_block,
            )
            pursuit.run()
            support[start:stop] = pursuit.selected.to(codes.device)
            evr[start:stop] = pursuit.evr.to(codes.device)
            coefficients[start:stop] = pursuit.coefficients().to(codes.device)
            n_exact += pursuit.n_screened
            bar.update(stop - start)
    bar.close()
    return SOMPResult(support, evr, coefficients, n_exact)


def _auto_chunk(
    n_batch: int, n_samples: int, rank: int, width: int, vocab: int, n_atoms: int
) -> int:
    """Heads per chunk: as many as fit in ``_CHUNK_BYTES``, in chunks of equal size."""
    reduced = min(n_samples, rank)
    state = 4 * (3 * vocab + width * reduced)  # the three float32 bounds, M' in float32
    # [M' | Q] and U in float64, and M and Z while the chunk is set up
    factors = 8 * (width * (reduced + n_atoms + rank) + n_samples * (rank + reduced))
    per_head = state + factors
    most = max(1, min(n_batch, _CHUNK_BYTES // per_head))
    n_chunks = -(-n_batch // most)
    return -(-n_batch // n_chunks)


def _split_matmul(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``left @ right`` (float32) with the inner dimension cut into blocks of ``_K_BLOCK``.

    BLAS may sum the K terms of a dot product in any order, so its round-off bound is
    γ_K Σ|terms|; summing the J block products afterwards gives γ_{b+J-1} Σ|terms|
    (b = min(K, _K_BLOCK)), which at K = 4096 is 8 times tighter.
    """
    inner = left.shape[1]
    out = left[:, :_K_BLOCK] @ right[:_K_BLOCK]
    for first in range(_K_BLOCK, inner, _K_BLOCK):
        out += left[:, first : first + _K_BLOCK] @ right[first : first + _K_BLOCK]
    return out


def _split_bmm(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Batched :func:`_split_matmul`: ``left [A, m, K] @ right [A, K, c]``."""
    inner = left.shape[2]
    out = left[:, :, :_K_BLOCK] @ right[:, :_K_BLOCK]
    for first in range(_K_BLOCK, inner, _K_BLOCK):
        out += left[:, :, first : first + _K_BLOCK] @ right[:, first : first + _K_BLOCK]
    return out


def _product_terms(inner: int) -> int:
    """Roundings per term of a :func:`_split_matmul` product over ``inner`` terms."""
    return min(inner, _K_BLOCK) + -(-inner // _K_BLOCK) - 1


def _up32(values: torch.Tensor) -> torch.Tensor:
    """Non-negative float64 values as float32 rounded up (never below the float64 value)."""
    return (values * (1 + 2 * _U32)).float()


def _gamma(count: int, unit: float) -> float:
    """γ_m = m·u / (1 − m·u): relative error bound of m rounding errors of size ≤ u."""
    if count * unit >= 0.5:
        raise ValueError(f"{count} float operations are too many for a round-off bound.")
    return count * unit / (1 - count * unit)


@contextmanager
def _ieee_float32_matmul() -> Iterator[None]:
    """Plain IEEE float32 products inside (no TF32/bf16 shortcuts): the margins assume them."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _over_blocks(
    device: torch.device,
    total: int,
    rows: int,
    work: Callable[[int, int], None],
    threads: int,
) -> None:
    """Call ``work(start, stop)`` on blocks of ``rows`` rows covering ``range(total)``.

    On the CPU the blocks are shared among ``threads`` Python threads that
    each run torch on one thread: the blocks write disjoint columns, and one join per call
    replaces the thread synchronisation every small torch operation would otherwise pay
    (which stalls for milliseconds whenever another process holds a core).
    """
    blocks = [(start, min(start + rows, total)) for start in range(0, total, rows)]
    workers = min(threads, len(blocks)) if device.type == "cpu" else 1
    if workers <= 1:
        with _single_thread(device):
            for start, stop in blocks:
                work(start, stop)
        return

    def share(part: list[tuple[int, int]]) -> None:
        for start, stop in part:
            work(start, stop)

    with _single_thread(device), ThreadPoolExecutor(workers) as pool:
        list(pool.map(share, [blocks[i::workers] for i in range(workers)]))


@contextmanager
def _single_thread(device: torch.device) -> Iterator[None]:
    """Run CPU torch ops on one thread inside the block (no-op on other devices).

    The per-step vector work is many medium-sized operations; with several threads each
    pays an OpenMP synchronisation, which stalls for milliseconds when another process
    holds a core. The streamed products share the CPU's threads by blocks instead.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _Atoms:
    """The dictionary as stored, read in blocks; atom j is row j, L2-normalised if asked.

    The float32 products use ``inverse32 = fl(1 / ‖row_j‖)`` from a float32 norm (0 for a
    zero row); the float64 exact scores normalise the gathered rows in float64.
    ``product_gamma`` bounds the relative error of every term of a float32 product
    ``fl(fl(row_j · x) · inverse32_j)`` against ``d_j · x`` (the dot product, x's and the
    row's rounding to float32, the norm, its inverse and the scaling), and ``norm_bound``
    bounds every ‖d_j‖ (1 when normalising).
    """

    def __init__(self, dictionary: torch.Tensor, normalize: bool, block: int | None):
        self.rows = dictionary  # [v, d], any float dtype, on the compute device
        self.device = dictionary.device
        vocab, width = dictionary.shape
        self.vocab, self.width, self.normalize = vocab, width, normalize
        block = block or max(1, _BLOCK_BYTES // (8 * width))
        norms = torch.empty(vocab, dtype=torch.float64, device=self.device)
        for start in range(0, vocab, block):
            norms[start : start + block] = self._norms(self.block_float(start, start + block))
        if not bool(torch.isfinite(norms).all()):
            raise ValueError(
                "the dictionary contains NaN or infinite values; SOMP needs finite atoms."
            )
        # Each float32 partial norm of ≤ 64 terms is within γ_66 of its exact value; the
        # float64 sum of their squares, the root, the inverse and its rounding to float32
        # keep inverse32 within γ_70 of 1/‖row‖.
        norm_gamma = _gamma(_NORM_BLOCK + 6, _U32)
        # A product term: rounded x and row (2), the split dot product, then × inverse32.
        product_gamma = _gamma(_product_terms(width) + 3, _U32)
        if normalize:
            self.inverse32 = torch.where(norms > 0, 1 / norms, 0.0).float()
            self.product_gamma = product_gamma + norm_gamma + product_gamma * norm_gamma
            self.norm_bound = 1.0 + 1e-12  # ‖row / ‖row‖‖ in float64
        else:
            self.product_gamma = product_gamma
            self.norm_bound = float(norms.max()) * (1 + norm_gamma)

    @staticmethod
    def _norms(rows: torch.Tensor) -> torch.Tensor:
        """Float64 norms of float32 rows ``[m, d]`` from float32 norms of 64-column pieces."""
        count, width = rows.shape
        full = width - width % _NORM_BLOCK
        squares = torch.zeros(count, dtype=torch.float64, device=rows.device)
        if full:
            pieces = torch.linalg.vector_norm(rows[:, :full].reshape(count, -1, _NORM_BLOCK), dim=2)
            squares += pieces.double().square().sum(1)
        if full < width:
            squares += torch.linalg.vector_norm(rows[:, full:], dim=1).double().square()
        return squares.sqrt()

    def block_float(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` as float32 ``[m, d]`` (a view when already float32)."""
        return self.rows[start:stop].float()

    def gather64(self, index: torch.Tensor) -> torch.Tensor:
        """The atoms at ``index`` (any shape) as float64 ``[..., d]``."""
        picked = self.rows[index].double()
        if not self.normalize:
            return picked
        norms = torch.linalg.vector_norm(picked, dim=-1, keepdim=True)
        return picked.div_(norms.clamp_min_(1e-300))  # a zero row stays zero


class _ChunkPursuit:
    """SOMP on C signal matrices in lockstep, bound-and-score style (see the module doc).

    Per head it holds three float32 ``[v]`` vectors: ``sq_bound`` (an upper bound on
    ‖y_j‖²), ``tri_bound`` (exact score at an earlier step plus its possible drift, +inf
    if never scored; the true value is at most ``tri_bound · tri_factor``) and ``bound``
    (an upper bound on the current float64 exact score, divided by ``tri_factor``).
    Every float32 operation on them is covered by a derived margin: docs/method.md.
    """

    def __init__(
        self,
        codes: torch.Tensor,
        maps: torch.Tensor | None,
        atoms: _Atoms,
        n_atoms: int,
        center: bool,
        vocab_block: int | None,
    ):
        f64 = torch.float64
        self.atoms = atoms
        self.device = atoms.device
        if center:
            codes = codes - codes.mean(1, keepdim=True)
        chunk, n, _ = codes.shape
        vocab, width = atoms.vocab, atoms.width
        self.chunk, self.n, self.k = chunk, n, n_atoms
        self.threads = torch.get_num_threads()  # CPU threads for the blocked work
        # Rows per block: the one-time products are [rows, C*kz] float32 (twice, for the
        # split inner dimension), the per-step ones [2C, rows] float32 with a few [C, rows]
        # float32 companions. By default both stay small enough to live in the CPU's cache.
        kz = min(n, codes.shape[2])
        cache = _CACHE_BYTES if self.device.type == "cpu" else 16 * _CACHE_BYTES
        self.rows_initial = vocab_block or max(256, cache // (4 * chunk * kz))
        self.rows_step = vocab_block or cache // (4 * 4096)
        with _single_thread(self.device):  # torch's batched CPU QR crawls on two threads
            ortho, upper = torch.linalg.qr(codes)  # U [C, n, kz], R [C, kz, r]
        # M' = M Rᵀ ([C, d, kz]): H = Z Mᵀ = U M'ᵀ.
        reduced = upper.transpose(1, 2) if maps is None else maps @ upper.transpose(1, 2)
        with _single_thread(self.device):
            self.kz = kz = ortho.shape[2]
            self.ortho = ortho
            # [M' | Q]: the exact scores project candidate atoms on both in one product.
            self.basis = torch.zeros(chunk, width, kz + n_atoms, dtype=f64, device=self.device)
            self.basis[:, :, :kz] = reduced
            self.basis32 = self.basis.float()  # its float32 copy, for the screening scores
            self.reduced32 = self.basis32[:, :, :kz]  # [C, d, kz]
            self.ortho32 = ortho.float()
            # Weights of the screening scores' error bound (see _screen_scores):
            # ν = column ℓ1 norms of |U32| and ω = |M'| ν, float64.
            self.nu = self.ortho32.double().abs().sum(1) * (1 + _gamma(n, _U64))  # [C, kz]
            self.omega = (reduced.abs() @ self.nu[..., None])[..., 0] * (1 + _gamma(kz, _U64))
            self.head_images = torch.zeros(chunk, kz, n_atoms, dtype=f64, device=self.device)
            self.total = reduced.square().sum((1, 2))  # ‖H‖²_F = ‖U M'ᵀ‖²_F = ‖M'‖²_F
            frob = self.total.sqrt()  # ‖M'‖_F ≥ ‖M'‖₂ ≥ ‖y_j‖ / ‖d_j‖
            self.frob = frob
            eye = torch.eye(kz, dtype=f64, device=self.device)
            # ‖U‖₂² ≤ 1 + ‖UᵀU − I‖_F; the 1e-12 covers the round-off of this check.
            drift = (ortho.transpose(1, 2) @ ortho - eye).square().sum((1, 2)).sqrt()
            # ‖c‖₁ ≤ √n ‖c‖₂ = √n ‖U y‖₂ ≤ √n ‖U‖₂ ‖y‖₂.
            scale = math.sqrt(n) * (1 + drift + 1e-12).sqrt()
            rho = atoms.norm_bound
            self.gamma_d = atoms.product_gamma * rho  # float32 product of an atom, per ‖x‖
            self.eps_initial = self.gamma_d * frob  # bound on ‖ĝ_j − g_j‖₂
            # Float64 round-off: of the exact scores (ε64), and per step of the ‖y‖² update.
            terms = n + kz + width + n_atoms + 8
            self.eps_exact = (
                4 * _gamma(terms, _U64) * math.sqrt(n * kz) * frob * rho * (1 + drift) + 1e-300
            )
            self.eps_update = 64 * _U64 * (frob * rho).square()
            # tri_bound takes ≤ 3 roundings per step and one when set: the true triangle
            # bound is ≤ tri_bound · tri_factor. bound = min(ℓ2 bound / tri_factor, tri_bound)
            # in float32 (sqrt, ×, +: γ_4 more), so bound · tri_factor ≥ every exact score.
            self.tri_factor = 1 + _gamma(3 * n_atoms + 4, _U32)
            self.scale32 = _up32(scale * (1 + _gamma(4, _U32)) / self.tri_factor)
            self.eps_exact32 = _up32(self.eps_exact * (1 + _gamma(4, _U32)) / self.tri_factor)
            f32 = torch.float32
            self.sq_bound = torch.empty(chunk, vocab, dtype=f32, device=self.device)
            self.tri_bound = torch.full((chunk, vocab), math.inf, dtype=f32, device=self.device)
            self.bound = torch.empty(chunk, vocab, dtype=f32, device=self.device)
            self.selected = torch.zeros(chunk, n_atoms, dtype=torch.long, device=self.device)
            self.evr = torch.zeros(chunk, n_atoms, dtype=f64, device=self.device)
            self.explained = torch.zeros(chunk, dtype=f64, device=self.device)
        self.steps = 0
        self.n_exact = 0  # float64 scores
        self.n_screened = 0  # certified float32 scores

    # --- the streamed products ------------------------------------------------------------

    def _initial_bounds(self) -> None:
        """‖y_j‖² ≤ (‖ĝ_j‖ + ε_g)² for every atom from ĝ = fl(D M'), one GEMM per block."""
        atoms, chunk, kz = self.atoms, self.chunk, self.kz
        # A float32 norm of kz terms is within γ_{kz+2} of the norm of the float32 values;
        # γ_{kz+4} also covers the ×, and the final γ_8 the +, the square, × and + after it.
        inflate = 1 + _gamma(kz + 4, _U32)
        eps_g = _up32(self.eps_initial)[:, None]
        eps_0 = _up32(self.eps_update)[:, None]
        right = self.reduced32.permute(1, 0, 2).reshape(atoms.width, chunk * kz)  # [d, C*kz]

        def block(start: int, stop: int) -> None:
            products = _split_matmul(atoms.block_float(start, stop), right)
            if atoms.normalize:
                products.mul_(atoms.inverse32[start:stop, None])
            norms = torch.linalg.vector_norm(products.view(stop - start, chunk, kz), dim=-1)
            norm = norms.T.mul(inflate).add_(eps_g)
            torch.square(norm, out=norm)
            self.sq_bound[:, start:stop] = norm.mul_(1 + _gamma(8, _U32)).add_(eps_0)
            self._refresh_bound(start, stop)

        _over_blocks(self.device, atoms.vocab, self.rows_initial, block, self.threads)

    def _refresh_bound(self, start: int, stop: int) -> None:
        bound = self.sq_bound[:, start:stop].clamp(min=0)
        bound.sqrt_().mul_(self.scale32[:, None]).add_(self.eps_exact32[:, None])
        self.bound[:, start:stop] = torch.minimum(bound, self.tri_bound[:, start:stop])

    def _update_bounds(
        self,
        direction: torch.Tensor,
        cross: torch.Tensor,
        cross_error: torch.Tensor,
        alpha: torch.Tensor,
        l1: torch.Tensor,
    ) -> None:
        """Fold the newest direction q (with ũ, α = ‖M'ᵀq‖², ‖Hq‖₁) into every atom's bounds.

        ``‖y_j‖²`` changes by ``Δ = −2 p w + p² α`` with ``p = q·d_j`` and ``w = ũ·d_j``,
        both from one float32 GEMM per block: ``|p̂ − p| ≤ ε_p = γ_P ρ ‖q‖`` and
        ``|ŵ − w| ≤ ε_w = γ_P ρ ‖ũ‖ + ρ δũ`` (γ_P: ``_Atoms.product_gamma``; δũ bounds the
        error of the float32 ũ), so
        ``|Δ̂ − Δ| ≤ 2ε_p|ŵ| + (2ε_w + 2αε_p)|p̂| + 2ε_pε_w + αε_p²``. The update itself runs
        in float32: forming Δ̂ adds ≤ γ_3 (α|p̂|² + 2|p̂||ŵ|) ≤ γ_3ρ' (α|p̂| + 2|ŵ|) with
        ρ' = ρ(1 + γ_P) ≥ |p̂|, and the four additions into ``sq_bound`` at most γ_5
        of (result + error terms), hence the final ``× (1 + 2γ_5)`` and the inflated terms.
        """
        atoms, chunk = self.atoms, self.chunk
        rho = self.atoms.norm_bound * (1 + self.gamma_d)
        g3, g4, g5 = _gamma(3, _U32), _gamma(4, _U32), _gamma(5, _U32)
        eps_p = self.gamma_d * direction.norm(dim=1)
        eps_w = self.gamma_d * cross.double().norm(dim=1) + self.atoms.norm_bound * cross_error
        inflate = 1 + 2 * g5
        c_w = _up32(inflate * (2 * eps_p + 2 * g3 * rho))[:, None]
        # (+ u ρ' α |p̂| for α's own rounding to float32)
        c_p = _up32(inflate * (2 * eps_w + 2 * alpha * eps_p + g4 * rho * alpha))[:, None]
        c_0 = _up32(inflate * (2 * eps_p * eps_w + alpha * eps_p.square() + self.eps_update))
        c_0 = c_0[:, None]
        # ‖c_j‖₁ moves by ≤ |p_j| ‖Hq‖₁ ≤ (|p̂_j| + ε_p) ‖Hq‖₁; the 1e-12 covers ‖Hq‖₁'s round-off.
        l1 = l1 * (1 + 1e-12)
        drift_p = _up32(l1)[:, None]
        drift_0 = _up32(eps_p * l1)[:, None]
        alpha = alpha.float()[:, None]
        vectors = torch.cat([direction.float(), cross])  # [2C, d]

        def block(start: int, stop: int) -> None:
            products = _split_matmul(vectors, atoms.block_float(start, stop).T)  # [2C, m]
            if atoms.normalize:
                products.mul_(atoms.inverse32[start:stop])
            p, w = products[:chunk], products[chunk:]
            sq = self.sq_bound[:, start:stop]
            change = p * alpha
            change.sub_(w, alpha=2)
            sq.addcmul_(change, p)
            sq.addcmul_(w.abs_(), c_w)
            p.abs_()
            sq.addcmul_(p, c_p).add_(c_0).mul_(inflate)
            self.tri_bound[:, start:stop].addcmul_(p, drift_p).add_(drift_0)
            self._refresh_bound(start, stop)

        _over_blocks(self.device, atoms.vocab, self.rows_step, block, self.threads)

    # --- exact scores and selection ---------------------------------------------------------

    def _exact_scores(self, heads: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Float64 ℓ1 scores ``[A, m]`` of atoms ``index [A, m]`` for the heads ``heads [A]``."""
        kz, t = self.kz, self.steps
        whole = heads.numel() == self.chunk
        basis = self.basis if whole else self.basis[heads]
        basis = basis[:, :, : kz + t]
        ortho_t = (self.ortho if whole else self.ortho[heads]).transpose(1, 2)
        images = None
        if t:
            images = (self.head_images if whole else self.head_images[heads])[:, :, :t]
            images = images.transpose(1, 2)  # Bᵀ [A, t, kz]
        count, width = index.shape
        scores = torch.empty(count, width, dtype=torch.float64, device=self.device)

        def score(first_head: int, last_head: int) -> None:
            rows = slice(first_head, last_head)
            per_column = (last_head - first_head) * max(self.atoms.width, self.n, kz + t)
            step = max(1, _SCORE_BUDGET // per_column)
            for first in range(0, width, step):
                columns = slice(first, first + step)
                projected = self.atoms.gather64(index[rows, columns]) @ basis[rows]  # [A, m, kz+t]
                coords = projected[..., :kz]
                if images is not None:  # y = M'ᵀd − B (Qᵀd)
                    coords = coords - projected[..., kz:] @ images[rows]
                scores[rows, columns] = torch.linalg.vector_norm(
                    coords @ ortho_t[rows], ord=1, dim=-1
                )

        # On the CPU the heads are shared among threads (see _over_blocks).
        _over_blocks(self.device, count, -(-count // self.threads), score, self.threads)
        self.n_exact += index.numel()
        return scores

    def _screen_scores(
        self, heads: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 ℓ1 scores of atoms ``index [A, m]`` for ``heads [A]``, with certified
        float64 intervals ``(lower, upper)`` (each ``[A, m]``) around the exact scores.

        The score is ``Ŝ = Σ_i |ĉ_i|`` with ``ĉ = U (ŷ_M − B p̂)`` and ``[ŷ_M, p̂] = [M', Q]ᵀ d``
        from the float32 split product (γ_P per term, as in the bounds). Following every
        rounding, ``|Ŝ − S| ≤ E`` with
        ``E = γ_{n+1} Ŝ + γ_{kz+3} ν·|ŷ| + (1 + u)(γ_P ω·|d| + γ_P Σβ + γ_{t+3} β·|p̂|)``,
        where ``ν = Σ_i |U_i|``, ``ω = |M'| ν``, ``β = |B|ᵀ ν``, and the non-negative sums
        in E, themselves in float32, are inflated by ``γ_{max(d, n)+2}``.
        """
        kz, t = self.kz, self.steps
        whole = heads.numel() == self.chunk
        pick = (lambda tensor: tensor) if whole else (lambda tensor: tensor[heads])
        basis = pick(self.basis32)[:, :, : kz + t]
        ortho_t = pick(self.ortho32).transpose(1, 2)
        nu = pick(self.nu).float()[..., None]  # float32 of a ≥ 0 float64 is within u
        omega = pick(self.omega).float()[..., None]
        images = beta = beta_sum = None
        if t:
            b64 = pick(self.head_images)[:, :, :t]  # B [A, kz, t]
            images = b64.float().transpose(1, 2)  # Bᵀ [A, t, kz]
            beta64 = (b64.abs().transpose(1, 2) @ pick(self.nu)[..., None])[..., 0]  # [A, t]
            beta, beta_sum = beta64.float()[..., None], beta64.sum(1)[:, None]
        count, width = index.shape
        atoms = self.atoms
        g_p = atoms.product_gamma
        sums = 1 + _gamma(max(atoms.width, self.n) + 2, _U32) + 2 * _U32
        lower = torch.empty(count, width, dtype=torch.float64, device=self.device)
        upper = torch.empty_like(lower)

        def score(first_head: int, last_head: int) -> None:
            rows = slice(first_head, last_head)
            per_column = (last_head - first_head) * max(atoms.width, self.n)
            step = max(1, _SCORE_BUDGET // per_column)
            for first in range(0, width, step):
                columns = slice(first, first + step)
                ids = index[rows, columns]
                raw = atoms.rows[ids].float()  # [a, w, d]
                projected = _split_bmm(raw, basis[rows])  # [a, w, kz + t]
                spread = (raw.abs_() @ omega[rows])[..., 0]  # ω·|row|
                if atoms.normalize:
                    scale = atoms.inverse32[ids]
                    projected.mul_(scale[..., None])
                    spread.mul_(scale)
                coords = projected[..., :kz]
                if images is not None:  # y = M'ᵀd − B (Qᵀd)
                    coords = coords - projected[..., kz:] @ images[rows]
                value = torch.linalg.vector_norm(coords @ ortho_t[rows], ord=1, dim=-1)
                value = value.double()
                error = _gamma(self.n + 1, _U32) * value
                error += _gamma(kz + 3, _U32) * sums * (coords.abs() @ nu[rows])[..., 0].double()
                slack = g_p * spread.double()
                if images is not None:
                    projections = projected[..., kz:].abs() @ beta[rows]
                    slack += (
                        g_p * beta_sum[rows] + _gamma(t + 3, _U32) * projections[..., 0].double()
                    )
                error += (1 + _U32) * sums * slack
                error *= 1 + 1e-6  # products of γ's (second-order terms)
                lower[rows, columns] = value - error
                upper[rows, columns] = value + error

        _over_blocks(self.device, count, -(-count // self.threads), score, self.threads)
        self.n_screened += index.numel()
        return lower, upper

    def _exact_pairs(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Float64 scores of the (head, atom) pairs ``rows [N]``, ``cols [N]`` (``[N]``)."""
        order = torch.argsort(rows, stable=True)
        rows, cols = rows[order], cols[order]
        heads, counts = torch.unique_consecutive(rows, return_counts=True)
        firsts = torch.cumsum(counts, 0) - counts
        slot = torch.repeat_interleave(torch.arange(heads.numel(), device=self.device), counts)
        position = torch.arange(rows.numel(), device=self.device) - firsts[slot]
        padded = cols[firsts][:, None].repeat(1, int(counts.max()))  # pad with a real atom
        padded[slot, position] = cols
        scores = self._exact_scores(heads, padded)[slot, position]
        return scores[torch.argsort(order)]

    def _select(self) -> torch.Tensor:
        """The next atom of every head: the argmax of the float64 exact scores.

        Every atom whose bound reaches the best certified lower bound found so far gets a
        float32 score with a certified interval (:meth:`_screen_scores`); every atom whose
        interval reaches that lower bound gets a float64 score, and the best of those wins.
        No other atom can beat it. Scores within ``_TIE`` (relative) of the best count as
        equal and the lowest index wins, as ``argmax`` does for equal values: real
        vocabularies hold duplicate rows, whose float64 scores may differ in the last bits
        when computed in different batches.
        """
        chunk, vocab = self.chunk, self.atoms.vocab
        bound = self.bound  # consumed: scored atoms are set to −inf
        eps = self.eps_exact
        # A lower bound on the best float64 score (our own evaluation's, hence − ε64).
        floor = torch.full((chunk,), -math.inf, dtype=torch.float64, device=self.device)
        found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        active = torch.arange(chunk, device=self.device)
        size = min(_FIRST_BLOCK, vocab)
        while True:
            values, index = torch.topk(bound if active.numel() == chunk else bound[active], size)
            values = values.double() * self.tri_factor  # ≥ the float64 scores they bound
            cut = floor[active] - floor[active].abs() * _TIE
            # A prefix of each row (values are sorted); −inf marks selected or scored atoms.
            needed = (values >= cut[:, None]) & (values > -math.inf)
            width = int(needed.sum(1).max())
            if width:
                needed, index = needed[:, :width], index[:, :width]
                lower, upper = self._screen_scores(active, index)
                rows = active[:, None].expand(-1, width)[needed]
                cols, lower, upper = index[needed], lower[needed], upper[needed]
                found.append((rows, cols, upper + eps[rows]))
                bound[rows, cols] = -math.inf
                self.tri_bound[rows, cols] = (upper + 2 * eps[rows]).float()
                floor.scatter_reduce_(0, rows, lower - eps[rows], "amax")
            if size >= vocab:
                break
            # Unscored atoms outside this block have bounds ≤ its last value.
            going = values[:, -1] >= floor[active] - floor[active].abs() * _TIE
            active = active[going]
            if active.numel() == 0:
                break
            size = min(2 * size, vocab)
        rows, cols, upper = (torch.cat(parts) for parts in zip(*found, strict=True))
        contender = upper >= floor[rows] - floor[rows].abs() * _TIE
        rows, cols = rows[contender], cols[contender]
        scores = self._exact_pairs(rows, cols)
        self.tri_bound[rows, cols] = (scores + 2 * eps[rows]).float()
        best = torch.full((chunk,), -math.inf, dtype=torch.float64, device=self.device)
        best.scatter_reduce_(0, rows, scores, "amax")
        near = scores >= best[rows] - best[rows].abs() * _TIE
        atom = torch.full((chunk,), vocab, dtype=torch.long, device=self.device)
        return atom.scatter_reduce_(0, rows[near], cols[near], "amin")

    def _add(self, atom: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Append atom ``[C]`` to every support.

        Returns q, ũ (float32) with a bound on its error, α = ‖M'ᵀq‖² and ‖Hq‖₁ (float64).
        """
        t, kz = self.steps, self.kz
        self.selected[:, t] = atom
        vector = self.atoms.gather64(atom)  # [C, d]
        previous = self.basis[:, :, kz : kz + t]  # Q [C, d, t]
        for _ in range(2):  # Gram–Schmidt twice, for orthogonality to round-off
            vector = vector - (previous @ (previous.transpose(1, 2) @ vector[..., None]))[..., 0]
        norm = vector.norm(dim=1, keepdim=True)
        direction = torch.where(norm > 0, vector / norm.clamp_min(1e-300), 0.0)
        head_image = (direction[:, None, :] @ self.basis[:, :, :kz])[:, 0]  # b = M'ᵀq [C, kz]
        # ũ = M'b − Q_t (B_tᵀ b), so that ũ·d_j = b·y_j (the cross term of the ‖y_j‖²
        # update). It only feeds a float32 product, so it is formed in float32 from the
        # float32 copy of M': within γ_{kz+4} (‖M'‖_F + ‖B_t‖_F) ‖b‖ ≤ 2γ_{kz+4} ‖M'‖_F ‖b‖.
        cross = (self.reduced32 @ head_image.float()[..., None])[..., 0]
        if t:
            earlier = self.head_images[:, :, :t].transpose(1, 2) @ head_image[..., None]
            cross -= (previous @ earlier)[..., 0].float()
        cross_error = 2 * _gamma(kz + 4, _U32) * self.frob * head_image.norm(dim=1)
        self.basis[:, :, kz + t] = direction
        self.basis32[:, :, kz + t] = direction.float()
        self.head_images[:, :, t] = head_image
        alpha = head_image.square().sum(1)  # ‖H q‖² = ‖U b‖² = ‖b‖²
        l1 = (self.ortho @ head_image[..., None])[..., 0].abs().sum(1)  # ‖H q‖₁
        self.explained += alpha
        self.evr[:, t] = torch.where(
            self.total > 0, self.explained / self.total.clamp_min(1e-300), 0.0
        )
        self.steps += 1
        self.tri_bound.scatter_(1, atom[:, None], -math.inf)  # never a candidate again
        return direction, cross, cross_error, alpha, l1

    def run(self) -> None:
        """Select ``k`` atoms for every head of the chunk."""
        self._initial_bounds()
        for step in range(self.k):
            with _single_thread(self.device):
                atom = self._select()
                added = self._add(atom)
            if step + 1 < self.k:
                self._update_bounds(*added)

    def coefficients(self) -> torch.Tensor:
        """Least-squares coefficients ``[C, n, k]`` on the selected (normalised) atoms.

        With ``D_Sᵀ = Q T`` (T = Qᵀ D_Sᵀ, triangular), ``W = (H Q) T⁻ᵀ``; the
        pseudo-inverse keeps a degenerate support (an atom in the span of earlier ones) finite.
        """
        with _single_thread(self.device):
            chosen = self.atoms.gather64(self.selected)  # [C, k, d]
            basis = self.basis[:, :, self.kz :]  # Q [C, d, k]
            triangle = basis.transpose(1, 2) @ chosen.transpose(1, 2)  # [C, k, k]
            images = self.ortho @ self.head_images  # H Q = U B, [C, n, k]
            return images @ torch.linalg.pinv(triangle).transpose(1, 2)


def logit_lens(
    signals: torch.Tensor,
    dictionary: torch.Tensor,
    *,
    per_sample: int = 5,
    n_tokens: int = 5,
    normalize: bool = False,
    vocab_block: int = _LENS_BLOCK,
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The paper's multi-sample logit-lens baseline.

    Each sample's top ``per_sample`` dictionary rows by logit ``h_i · d_j``; then the
    ``n_tokens`` rows most frequent across samples (ties: first seen). The logits are
    computed in blocks of ``vocab_block`` rows, so no ``[n, v]`` matrix is held.

    Args:
        signals: ``[n, d]``.
        dictionary: ``[v, d]`` (the raw unembedding; ``normalize`` for unit rows), computed
            on its device.

    Returns:
        ``([n, per_sample]`` per-sample top rows (on the signals' device),
        ``[(row, count), ...]`` most frequent).
    """
    vocab = dictionary.shape[0]
    if not 1 <= per_sample <= vocab:
        raise ValueError(f"per_sample must be between 1 and {vocab}, got {per_sample}.")
    queries = signals.detach().to(device=dictionary.device, dtype=torch.float32)
    best_values = best_index = None
    for start in range(0, vocab, vocab_block):
        rows = dictionary[start : start + vocab_block].detach().float()
        if normalize:
            rows = normalize_rows(rows)
        values, index = torch.topk(queries @ rows.T, min(per_sample, rows.shape[0]), dim=1)
        index = index + start
        if best_values is not None:
            values = torch.cat([best_values, values], 1)
            index = torch.cat([best_index, index], 1)
            values, order = torch.topk(values, min(per_sample, values.shape[1]), dim=1)
            index = index.gather(1, order)
        best_values, best_index = values, index
    top = best_index.to(signals.device)
    counts = Counter(top.reshape(-1).tolist())
    return top, counts.most_common(n_tokens)
