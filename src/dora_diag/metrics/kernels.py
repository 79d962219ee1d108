"""Magnitude and direction change between two weight blocks, accurate for tiny changes.

Channels are output rows (``axis="out"``: a block of shape (rows, cols) reduces over dim 1)
or input columns (``axis="in"``: reduces over dim 0, summed across row blocks).

Fine-tuning moves a row by ``1 - cos`` of 1e-6 ... 1e-9, where ``1 - <a,c>/(|a||c|)`` in fp32
is pure rounding noise. With ``d = c - a`` (exact in fp32 for bf16/fp16 inputs) we use

    |c| - |a| = <d, a + c> / (|a| + |c|)
    1 - cos   = (|d|^2 - (|c| - |a|)^2) / (2 |a| |c|)

whose terms are each accurate to their own size: sums run in fp32 per block and are combined
in fp64. Per block only ``|a|^2``, ``<a, d>`` and ``|d|^2`` are summed (one batched Gram
product); ``|c|^2`` follows from them except where a channel lost most of its norm, which
``unsure_c2`` flags for a sum over c itself (``square_sums``). The subtraction only loses
digits when the change is almost purely radial (``(|c| - |a|)^2`` close to ``|d|^2``); those
channels are flagged and recomputed from the chord ``|a/|a| - c/|c||^2 / 2`` in fp64
(``chord_sums``), which has no cancellation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import fused

# Recompute a channel in fp64 when the direction term keeps less than this share of |d|^2:
# fp32 sums carry ~1e-6 relative error, so the result keeps ~1e-4 relative accuracy or better.
REFINE_BELOW = 1e-2

# |c|^2 = |a|^2 + 2<a,d> + |d|^2 carries an absolute error of ~1e-6 (|a|^2 + |d|^2); below a
# tenth of that scale (the channel lost most of its norm, or was zeroed) it is summed from c.
RESUM_C2_BELOW = 0.1

# Types that mix with an fp32 operand without a copy (float8 does not promote).
_PROMOTES = (torch.bfloat16, torch.float16, torch.float32)


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


class Scratch:
    """Grow-only fp32 scratch memory for ``block_sums``, reused block after block.

    Temporaries allocated per block are freed and page-faulted in again every time once they
    pass glibc's mmap threshold; a reused buffer also stays in cache.
    """

    def __init__(self) -> None:
        self._buf: torch.Tensor | None = None

    def take(self, numel: int, device: torch.device) -> torch.Tensor:
        if self._buf is None or self._buf.numel() < numel or self._buf.device != device:
            self._buf = torch.empty(numel, dtype=torch.float32, device=device)
        return self._buf[:numel]


def block_sums(a: torch.Tensor, c: torch.Tensor, axis: str = "out", scratch: Scratch | None = None) -> ChannelSums:
    """Sums for one block pair ``a`` (base) and ``c`` (fine-tuned), both of shape (rows, cols).

    ``axis="out"`` reduces over dim 1 (one value per row), ``"in"`` over dim 0 (per column).
    With ``d = c - a``: ``p = <d, a + c> = 2 <a, d> + |d|^2`` and ``|c|^2 = |a|^2 + p``, so
    three sums of a and d suffice (see ``unsure_c2`` for where the latter is not enough).
    """
    one_pass = fused.sums(a, c, axis)
    if one_pass is not None:
        return _from_gram(*one_pass)
    rows, cols = a.shape
    if c.dtype not in _PROMOTES:
        c = c.float()
    x = (scratch or Scratch()).take((2 if axis == "out" else 5) * rows * cols, a.device)
    if axis == "out":
        # Channel r holds a_r and d_r side by side: one batched 2x2 Gram matrix per row.
        x = x.view(rows, 2, cols)
        a32, d = x[:, 0], x[:, 1]
    else:
        a32, d = x[: rows * cols].view(rows, cols), x[rows * cols: 2 * rows * cols].view(rows, cols)
    a32.copy_(a)
    torch.sub(c, a32, out=d)   # computed in fp32: exact for bf16/fp16 inputs
    if axis == "out":
        g = torch.bmm(x, x.transpose(1, 2)).double()
        a2, ad, d2 = g[:, 0, 0], g[:, 0, 1], g[:, 1, 1]
    else:
        # Column sums: three product planes reduced over rows by one product with a ones
        # vector (reductions over dim 0 run ~10x slower).
        prod = x[2 * rows * cols:].view(3, rows, cols)
        torch.mul(a32, a32, out=prod[0])
        torch.mul(a32, d, out=prod[1])
        torch.mul(d, d, out=prod[2])
        a2, ad, d2 = (torch.ones(rows, dtype=torch.float32, device=a.device) @ prod).double()
    return _from_gram(a2, ad, d2)


def _from_gram(a2: torch.Tensor, ad: torch.Tensor, d2: torch.Tensor) -> ChannelSums:
    """ChannelSums from fp64 ``|a|^2``, ``<a, d>``, ``|d|^2`` per channel."""
    p = 2 * ad + d2
    return ChannelSums(a2, a2 + p, d2, p)


def unsure_c2(s: ChannelSums) -> torch.Tensor:
    """bool per channel: ``s.c2`` is not accurate to ~1e-5 (or not finite) and must be summed
    from c itself."""
    return ~(s.c2 >= RESUM_C2_BELOW * (s.a2 + s.d2))


def square_sums(x: torch.Tensor, axis: str = "out") -> torch.Tensor:
    """fp64 ``sum x^2`` per channel of a block of shape (rows, cols)."""
    return x.double().square().sum(dim=1 if axis == "out" else 0)


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


def apply_chord(ch: ChannelChanges, chord: torch.Tensor) -> None:
    """Replace ``dd`` of the refined channels by half the chord sum (normalised rows can
    exceed length 1 by an ulp, hence the clamp)."""
    ch.dd = torch.where(ch.refine, (chord / 2).clamp(0, 2), ch.dd)

