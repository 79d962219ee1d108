"""Effective weights of a low-rank adapter, and their ΔM/ΔD sums straight from the factors.

A LoRA module changes a stored weight W0 of shape (rows, cols) to ``W0 + L @ R`` with
L (rows, r) and R (r, cols), the scale s folded into L. Linear and Conv layers have L = s·B,
R = A (reshaped to (r, in·kh·kw)); GPT-2 Conv1D and embeddings store the transpose, so
L = s·Aᵀ and R = Bᵀ. DoRA then rescales each output channel of V = W0 + L@R to its learned
magnitude: W' = k·V with k = m / ‖V‖, the norm running over the stored row (``axis="out"``)
or the stored column (``axis="in"``, Conv1D and embeddings).

Per channel of a block w (n, cols) of W0, three sums carry everything ``ChannelSums`` needs:
a2 = ‖w‖², g = <w, LR> and q = ‖LR‖², with g and q from (n, r) and (r, r) products instead
of the dense (n, cols) delta:

    axis="out" (per row i):     g_i = Σ_r L_ir (w Rᵀ)_ir,   q_i = L_i (R Rᵀ) L_iᵀ
    axis="in"  (per column j):  g_j = Σ_r R_rj (Lᵀ w)_rj,   q_j = R_jᵀ (Lᵀ L) R_j

With d = W' - W0 = (k-1)·w + k·LR these give (k = 1 for LoRA):

    ‖d‖²          = (k-1)²·a2 + 2k(k-1)·g + k²·q
    <d, W0 + W'>  = (k-1)(k+1)·a2 + k²·(2g + q)
    ‖W'‖²         = a2 + <d, W0 + W'>

each term accurate to its own size, and additive over row blocks for per-column channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .kernels import ChannelSums


@dataclass
class FactorSums:
    """Per-channel fp64 sums over a block, each of shape (channels,)."""

    a2: torch.Tensor   # ‖w‖²
    g: torch.Tensor    # <w, L R>
    q: torch.Tensor    # ‖L R‖²

    def add_(self, other: "FactorSums") -> None:
        for name in ("a2", "g", "q"):
            getattr(self, name).add_(getattr(other, name))


@dataclass
class LowRankDelta:
    """One adapted weight: ``W' = k · (W0 + L @ R)``, k = 1 without a magnitude."""

    L: torch.Tensor                     # (rows, r) fp32, scale folded in
    R: torch.Tensor                     # (r, cols) fp32
    magnitude: torch.Tensor | None      # (channels,) fp64 along ``magnitude_axis``; None for LoRA
    magnitude_axis: str = "out"         # "out": one magnitude per stored row, "in": per stored column

    def to(self, device: torch.device) -> "LowRankDelta":
        if self.L.device == device:
            return self
        mag = None if self.magnitude is None else self.magnitude.to(device)
        return LowRankDelta(self.L.to(device), self.R.to(device), mag, self.magnitude_axis)


def expert_factors(A: torch.Tensor, B: torch.Tensor, experts: int, expert: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B_e, A_e) of one expert of PEFT's ``ParamWrapper`` on a 3-D parameter, ΔW_e = s·B_e @ A_e.

    PEFT holds all E experts in one pair: A (r·E, in) is read as (E, r, in), expert-major,
    while B (out, r·E) is read as (out, r, E), rank-major, so expert e has A_e = A[e·r:(e+1)·r]
    (r, in) and B_e = B[:, e::E] (out, r) (``ParamWrapper.get_delta_weight``).
    """
    r = A.shape[0] // experts
    return B[:, expert::experts], A[expert * r:(expert + 1) * r]


def factor_sums(w: torch.Tensor, L: torch.Tensor, R: torch.Tensor, axis: str) -> FactorSums:
    """Sums for a base block ``w`` (n, cols) and the matching rows ``L`` (n, r) of the left factor.

    ``axis="out"`` gives one value per row of the block, ``"in"`` per column (partial sums
    over this block's rows).
    """
    w = w.float()
    dim = 1 if axis == "out" else 0
    a2 = torch.linalg.vector_norm(w, dim=dim).double().square()
    if _dense_is_smaller(w, L, axis):
        lr = L @ R
        return FactorSums(a2, (w * lr).sum(dim).double(), lr.square().sum(dim).double())
    if axis == "out":
        g = (L * (w @ R.T)).sum(1)
        q = ((L @ (R @ R.T)) * L).sum(1)
    else:
        g = (R * (L.T @ w)).sum(0)
        q = (((L.T @ L) @ R) * R).sum(0)
    return FactorSums(a2, g.double(), q.double())


def _dense_is_smaller(w: torch.Tensor, L: torch.Tensor, axis: str) -> bool:
    """Whether the block's dense delta (n, cols) takes fewer elements than the factored
    products: (n, r) and (r, r) for ``axis="out"``, (r, cols) and (r, r) for ``"in"``. A rank
    as large as the layer is wide (or larger: a hostile file) then costs no more memory than
    the block itself, never r²."""
    n, cols = w.shape
    r = L.shape[1]
    factored = r * r + (n * r if axis == "out" else r * cols)
    return factored > n * cols


def dora_scale(magnitude: torch.Tensor, full: FactorSums) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, k - 1) per channel from sums over whole channels: k = m / ‖W0 + LR‖.

    A channel whose V is all zero gets k = 0 (W' stays zero) where PEFT would divide by zero.
    """
    norm = (full.a2 + 2 * full.g + full.q).clamp_min(0).sqrt()
    live = norm > 0
    safe = norm.where(live, torch.ones_like(norm))
    k = torch.where(live, magnitude / safe, torch.zeros_like(norm))
    km1 = torch.where(live, (magnitude - norm) / safe, -torch.ones_like(norm))
    return k, km1


def channel_sums(s: FactorSums, scale: tuple[torch.Tensor, torch.Tensor] | None) -> ChannelSums:
    """``ChannelSums`` of (W0, W') from factor sums; ``scale`` is DoRA's (k, k - 1) or None."""
    if scale is None:
        p = 2 * s.g + s.q
        return ChannelSums(s.a2, s.a2 + p, s.q.clone(), p)
    k, km1 = scale
    d2 = km1.square() * s.a2 + 2 * k * km1 * s.g + k.square() * s.q
    p = km1 * (k + 1) * s.a2 + k.square() * (2 * s.g + s.q)
    return ChannelSums(s.a2, s.a2 + p, d2, p)


def dense_rows(delta: LowRankDelta, w: torch.Tensor, start: int, stop: int,
               col_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``start:stop`` of W' in fp32, shape (n, cols), for the base block ``w`` (n, cols).

    Per-column DoRA needs ``col_scale`` = k over whole columns (see ``dora_scale``).
    """
    L = delta.L[start:stop]
    v = w.float() + L @ delta.R
    if delta.magnitude is None:
        return v
    if delta.magnitude_axis == "out":
        k, _ = dora_scale(delta.magnitude[start:stop], factor_sums(w, L, delta.R, "out"))
        return v * k.float().unsqueeze(1)
    return v * col_scale.float().unsqueeze(0)
