"""Plain textbook SOMP (Tropp, Gilbert & Strauss 2006), the oracle for the fast one.

Recomputes the full residual correlation matrix R Dᵀ at every step and refits by
``torch.linalg.lstsq`` on the whole support: slow, obviously right.
"""

from __future__ import annotations

import torch


def textbook_somp(
    signals: torch.Tensor,
    dictionary: torch.Tensor,
    n_atoms: int,
    *,
    center: bool = True,
    normalize: bool = True,
    dtype: torch.dtype = torch.float64,
) -> tuple[list[int], list[float], torch.Tensor]:
    """SOMP of ``signals [n, d]`` over ``dictionary [v, d]``: (support, EVR curve, coefficients [n, k])."""
    h = signals.to(dtype)
    if center:
        h = h - h.mean(0, keepdim=True)
    atoms = dictionary.to(dtype)
    if normalize:
        atoms = atoms / atoms.norm(dim=1, keepdim=True)
    total = float((h**2).sum())
    residual = h.clone()
    support: list[int] = []
    evr: list[float] = []
    coefficients = torch.zeros(h.shape[0], 0, dtype=dtype)
    for _ in range(n_atoms):
        scores = (residual @ atoms.T).abs().sum(0)
        if support:
            scores[support] = -1.0
        support.append(int(torch.argmax(scores)))
        chosen = atoms[support]  # [t, d]
        coefficients = torch.linalg.lstsq(chosen.T, h.T).solution.T  # [n, t]
        residual = h - coefficients @ chosen
        evr.append(1.0 - float((residual**2).sum()) / total)
    return support, evr, coefficients
