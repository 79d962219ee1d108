"""Magnitude and direction change between two weight blocks, accurate for tiny changes.

Channels are output rows (``axis="out"``: a block of shape (rows, cols) reduces over dim 1)
or input columns (``axis="in"``: reduces over dim 0, summed across row blocks).

Fine-tuning moves a row by ``1 - cos`` of 1e-6 ... 1e-9, where ``1 - <a,c>/(|a||c|)`` in fp32
is pure rounding noise. With ``d = c - a`` (exact in fp32 for bf16/fp16 inputs) we use

    |c| - |a| = <d, a + c> / (|a| + |c|)
    1 - cos   = (|d|^2 - (|c| - |a|)^2) / (2 |a| |c|)

whose terms are each accurate to their own size: sums run in fp32 per block and are combined
in fp64. The subtraction only loses digits when the change is almost purely radial
(``(|c| - |a|)^2`` close to ``|d|^2``); those channels are flagged and recomputed from the
chord ``|a/|a| - c/|c||^2 / 2`` in fp64 (``chord_sums``), which has no cancellation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Recompute a channel in fp64 when the direction term keeps less than this share of |d|^2:
# fp32 sums carry ~1e-6 relative error, so the result keeps ~1e-4 relative accuracy or better.
REFINE_BELOW = 1e-2


@dataclass
class ChannelSums:
    """Per-channel fp64 accumulators, each of shape (channels,)."""

    a2: torch.Tensor   # |a|^2  (base)
    c2: torch.Tensor   # |c|^2  (fine-tuned)
    d2: torch.Tensor   # |c - a|^2
    p: torch.Tensor    # <c - a, a + c>

    @classmethod
    def zeros(cls, channels: int, device: torch.device) -> "ChannelSums":
        z = lambda: torch.zeros(channels, dtype=torch.float64, device=device)  # noqa: E731
        return cls(z(), z(), z(), z())

    def add_(self, other: "ChannelSums", index: slice | None = None) -> None:
        """Accumulate ``other`` into channels ``index`` (all channels when None)."""
        for name in ("a2", "c2", "d2", "p"):
            mine = getattr(self, name)
            (mine if index is None else mine[index]).add_(getattr(other, name))

    def cpu(self) -> "ChannelSums":
        return ChannelSums(self.a2.cpu(), self.c2.cpu(), self.d2.cpu(), self.p.cpu())


def block_sums(a: torch.Tensor, c: torch.Tensor, axis: str = "out") -> ChannelSums:
    """Sums for one block pair ``a`` (base) and ``c`` (fine-tuned), both of shape (rows, cols).

    ``axis="out"`` reduces over dim 1 (one value per row), ``"in"`` over dim 0 (per column).
    """
    dim = 1 if axis == "out" else 0
    a, c = a.float(), c.float()
    d = c - a
    norm = torch.linalg.vector_norm
    sq = lambda x: norm(x, dim=dim).double().square()  # noqa: E731
    return ChannelSums(sq(a), sq(c), sq(d), torch.linalg.vecdot(d, a + c, dim=dim).double())


def chord_sums(a: torch.Tensor, c: torch.Tensor, a_norm: torch.Tensor, c_norm: torch.Tensor,
               axis: str = "out") -> torch.Tensor:
    """fp64 ``sum (a/|a| - c/|c|)^2`` per channel; norms broadcast along the reduced axis."""
    shape = (-1, 1) if axis == "out" else (1, -1)
    u = a.double() / a_norm.view(shape) - c.double() / c_norm.view(shape)
    return u.square().sum(dim=1 if axis == "out" else 0)


@dataclass
class ChannelChanges:
    """Per-channel results in fp64: signed magnitude change, 1 - cos, base magnitude."""

    dm: torch.Tensor
    dd: torch.Tensor
    m0: torch.Tensor
    zero: torch.Tensor     # bool: channel is all-zero in base or fine-tuned (no direction)
    refine: torch.Tensor   # bool: recompute ``dd`` with ``chord_sums``
    nonfinite: torch.Tensor  # bool: NaN/Inf in either channel (or overflow); dm/dd are NaN there

    def cpu(self) -> "ChannelChanges":
        return ChannelChanges(self.dm.cpu(), self.dd.cpu(), self.m0.cpu(), self.zero.cpu(), self.refine.cpu(),
                              self.nonfinite.cpu())


def channel_changes(s: ChannelSums) -> ChannelChanges:
    nonfinite = ~(s.a2.isfinite() & s.c2.isfinite() & s.d2.isfinite() & s.p.isfinite())
    m0, m1 = s.a2.sqrt(), s.c2.sqrt()
    zero = ~nonfinite & ((m0 == 0) | (m1 == 0))
    total = m0 + m1
    dm = torch.where(total > 0, s.p / total.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(total))
    num = s.d2 - dm.square()
    den = 2 * m0 * m1
    dd = torch.where(zero, torch.zeros_like(num), num.clamp_min(0) / den.where(~zero, torch.ones_like(den)))
    refine = ~zero & ~nonfinite & (s.d2 > 0) & (num < REFINE_BELOW * s.d2)
    nan = torch.full_like(dm, torch.nan)
    return ChannelChanges(dm.where(~nonfinite, nan), dd.clamp(0, 2).where(~nonfinite, nan), m0, zero, refine,
                          nonfinite)
