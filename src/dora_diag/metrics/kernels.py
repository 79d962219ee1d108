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

Blocks and results are numpy arrays or torch tensors (``arrays``): every function works on
either, with the operations of its inputs' kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..arrays import ops_for, ops_of
from . import fused

# Recompute a channel in fp64 when the direction term keeps less than this share of |d|^2:
# fp32 sums carry ~1e-6 relative error, so the result keeps ~1e-4 relative accuracy or better.
REFINE_BELOW = 1e-2

# |c|^2 = |a|^2 + 2<a,d> + |d|^2 carries an absolute error of ~1e-6 (|a|^2 + |d|^2); below a
# tenth of that scale (the channel lost most of its norm, or was zeroed) it is summed from c.
RESUM_C2_BELOW = 0.1


@dataclass
class ChannelSums:
    """Per-channel fp64 accumulators, each of shape (channels,)."""

    a2: object   # |a|^2  (base)
    c2: object   # |c|^2  (fine-tuned)
    d2: object   # |c - a|^2
    p: object    # <c - a, a + c>

    @classmethod
    def zeros(cls, channels: int, device) -> "ChannelSums":
        """Zeros as the engine's arrays on ``device`` (numpy on CPU, ``arrays.ops_for``)."""
        ops = ops_for(device)
        z = lambda: ops.zeros(channels, ops.float64, device)  # noqa: E731
        return cls(z(), z(), z(), z())

    def add_(self, other: "ChannelSums", index: slice | None = None) -> None:
        """Accumulate ``other`` into channels ``index`` (all channels when None)."""
        for name in ("a2", "c2", "d2", "p"):
            mine = getattr(self, name)
            (mine if index is None else mine[index])[...] += getattr(other, name)


class Scratch:
    """Grow-only fp32 scratch memory for ``block_sums``, reused block after block.

    Temporaries allocated per block are freed and page-faulted in again every time once they
    pass glibc's mmap threshold; a reused buffer also stays in cache.
    """

    def __init__(self) -> None:
        self._buf = None

    def take(self, numel: int, like):
        """fp32 memory for ``numel`` values, of ``like``'s kind and on its device."""
        ops = ops_of(like)
        buf = self._buf
        if buf is None or ops_of(buf) is not ops or buf.shape[0] < numel or ops.device_of(buf) != ops.device_of(like):
            self._buf = buf = ops.zeros(numel, ops.float32, ops.device_of(like))
        return buf[:numel]


def block_sums(a, c, axis: str = "out", scratch: Scratch | None = None) -> ChannelSums:
    """Sums for one block pair ``a`` (base) and ``c`` (fine-tuned), both of shape (rows, cols).

    ``axis="out"`` reduces over dim 1 (one value per row), ``"in"`` over dim 0 (per column).
    With ``d = c - a``: ``p = <d, a + c> = 2 <a, d> + |d|^2`` and ``|c|^2 = |a|^2 + p``, so
    three sums of a and d suffice (see ``unsure_c2`` for where the latter is not enough).
    """
    one_pass = fused.sums(a, c, axis)
    if one_pass is not None:
        return _from_gram(*one_pass)
    ops = ops_of(a)
    rows, cols = a.shape
    if not ops.promotes(c):
        c = ops.f32(c)
    x = (scratch or Scratch()).take((2 if axis == "out" else 5) * rows * cols, a)
    if axis == "out":
        # Channel r holds a_r and d_r side by side: one batched 2x2 Gram matrix per row.
        x = x.reshape(rows, 2, cols)
        a32, d = x[:, 0], x[:, 1]
    else:
        a32, d = x[: rows * cols].reshape(rows, cols), x[rows * cols: 2 * rows * cols].reshape(rows, cols)
    ops.copy_into(a32, a)
    ops.sub(c, a32, out=d)   # computed in fp32: exact for bf16/fp16 inputs
    if axis == "out":
        g = ops.f64(x @ ops.swap12(x))
        a2, ad, d2 = g[:, 0, 0], g[:, 0, 1], g[:, 1, 1]
    else:
        # Column sums: three product planes reduced over rows by one product with a ones
        # vector (reductions over dim 0 run ~10x slower).
        prod = x[2 * rows * cols:].reshape(3, rows, cols)
        ops.mul(a32, a32, out=prod[0])
        ops.mul(a32, d, out=prod[1])
        ops.mul(d, d, out=prod[2])
        a2, ad, d2 = ops.f64(ops.ones(rows, a32) @ prod)
    return _from_gram(a2, ad, d2)


def _from_gram(a2, ad, d2) -> ChannelSums:
    """ChannelSums from fp64 ``|a|^2``, ``<a, d>``, ``|d|^2`` per channel."""
    p = 2 * ad + d2
    return ChannelSums(a2, a2 + p, d2, p)


def unsure_c2(s: ChannelSums):
    """bool per channel: ``s.c2`` is not accurate to ~1e-5 (or not finite) and must be summed
    from c itself."""
    return ~(s.c2 >= RESUM_C2_BELOW * (s.a2 + s.d2))


def square_sums(x, axis: str = "out"):
    """fp64 ``sum x^2`` per channel of a block of shape (rows, cols)."""
    ops = ops_of(x)
    x = ops.f64(x)
    return ops.sum(x * x, 1 if axis == "out" else 0)


def chord_sums(a, c, a_norm, c_norm, axis: str = "out"):
    """fp64 ``sum (a/|a| - c/|c|)^2`` per channel; norms broadcast along the reduced axis."""
    ops = ops_of(a)
    shape = (-1, 1) if axis == "out" else (1, -1)
    u = ops.f64(a) / a_norm.reshape(shape) - ops.f64(c) / c_norm.reshape(shape)
    return ops.sum(u * u, 1 if axis == "out" else 0)


@dataclass
class ChannelChanges:
    """Per-channel results in fp64: signed magnitude change, 1 - cos, base magnitude."""

    dm: object
    dd: object
    m0: object
    zero: object     # bool: channel is all-zero in base or fine-tuned (no direction)
    refine: object   # bool: recompute ``dd`` with ``chord_sums``
    nonfinite: object  # bool: NaN/Inf in either channel (or overflow); dm/dd are NaN there

    FIELDS = ("dm", "dd", "m0", "zero", "refine", "nonfinite")

    def numpy(self) -> "ChannelChanges":
        """The same changes as numpy arrays on the host (what results are kept and tabled as)."""
        ops = ops_of(self.dm)
        return ChannelChanges(*(ops.numpy(getattr(self, f)) for f in self.FIELDS))


def channel_changes(s: ChannelSums) -> ChannelChanges:
    ops = ops_of(s.a2)
    nonfinite = ~(ops.isfinite(s.a2) & ops.isfinite(s.c2) & ops.isfinite(s.d2) & ops.isfinite(s.p))
    m0, m1 = ops.sqrt(s.a2), ops.sqrt(s.c2)
    zero = ~nonfinite & ((m0 == 0) | (m1 == 0))
    total = m0 + m1
    dm = ops.where(total > 0, s.p / ops.clamp(total, TINY), 0.0)
    num = s.d2 - dm * dm
    den = 2 * m0 * m1
    dd = ops.where(zero, 0.0, ops.clamp(num, 0.0) / ops.where(~zero, den, 1.0))
    refine = ~zero & ~nonfinite & (s.d2 > 0) & (num < REFINE_BELOW * s.d2)
    nan = float("nan")
    return ChannelChanges(ops.where(~nonfinite, dm, nan), ops.where(~nonfinite, ops.clamp(dd, 0.0, 2.0), nan), m0,
                          zero, refine, nonfinite)


def apply_chord(ch: ChannelChanges, chord) -> None:
    """Replace ``dd`` of the refined channels by half the chord sum (normalised rows can
    exceed length 1 by an ulp, hence the clamp)."""
    ch.dd = ops_of(chord).where(ch.refine, ops_of(chord).clamp(chord / 2, 0.0, 2.0), ch.dd)


# The smallest normal fp64 (``torch.finfo(torch.float64).tiny``): keeps an all-zero pair's
# division defined; ``where`` discards its result.
TINY = 2.2250738585072014e-308
