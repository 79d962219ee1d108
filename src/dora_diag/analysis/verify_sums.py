"""The sums ``verify`` decides on, streamed over row blocks, and what they say about a merge.

For a tensor with base B, expected E and merged M, each viewed as (rows, cols) with all axes
after the first flattened, one pass accumulates in fp64:

* ``err2 = ‖M − E‖²``, ``change2 = ‖E − B‖²``, ``moved2 = ‖M − B‖²``, ``expected2 = ‖E‖²`` and
  ``dot = <M − B, E − B>`` (for "the merge applied the change times c": c = dot / change2);
* per row and per column (the two axes a DoRA magnitude may run along): <M, E>, ‖E‖², ‖M‖²,
  so that "every channel of M is parallel to E's" can be tested: Σ (‖M_i‖² − <M_i,E_i>²/‖E_i‖²) ≈ 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..arrays import ieee, ops_of
from ..io.safetensors_file import TensorInfo
from ..runtime import intra_op_threads

# (start, stop) -> rows (stop - start, cols), float: numpy arrays or torch tensors (``arrays``)
Rows = Callable[[int, int], object]


@dataclass
class Sums:
    err2: float
    change2: float
    moved2: float
    expected2: float
    dot: float
    # <M,E>, ‖E‖², ‖M‖² per row (rows,) and per column (cols,); only when asked for (diagnosis)
    by_row: tuple = ()
    by_col: tuple = ()


def stream_sums(base: TensorInfo, base_rows: Rows, merged_rows: Rows, expected_rows: Callable,
                block_bytes: int, per_channel: bool = False) -> Sums:
    """One pass over row blocks; ``expected_rows(b, start, stop)`` maps the base block b to E's rows.
    ``per_channel`` adds the row and column sums a diagnosis needs (three more products a block)."""
    rows, cols = base.shape[0], math.prod(base.shape[1:])
    step = max(1, block_bytes // max(1, cols * base.itemsize))
    # Memory-bound fp64 passes over MB-sized blocks: torch's worker threads gain nothing there and
    # lose much on a busy machine (measured: 19 s with 2 threads, 3.2 s with 1, for 16 fp32
    # 2048x2048 tensors on 2 shared cores).
    with intra_op_threads(1), ieee():
        return _sums(rows, cols, step, base_rows, merged_rows, expected_rows, per_channel)


def _sums(rows: int, cols: int, step: int, base_rows: Rows, merged_rows: Rows, expected_rows: Callable,
          per_channel: bool) -> Sums:
    totals = [0.0] * 5
    by_row, by_col = [], []
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        raw = base_rows(start, stop)
        ops = ops_of(raw)
        if per_channel and not by_row:
            by_row = [ops.zeros(rows, ops.float64) for _ in range(3)]
            by_col = [ops.zeros(cols, ops.float64) for _ in range(3)]
        expected = expected_rows(raw, start, stop)
        b = ops.f64(raw.reshape(-1))
        e = b if expected is raw else ops.f64(expected.reshape(-1))
        m = ops.f64(merged_rows(start, stop).reshape(-1))
        d = m - e
        if e is b:   # nothing expected to change: M − E is M − B, E − B is zero
            terms = [ops.norm2(d), 0.0, ops.norm2(d), ops.norm2(e), 0.0]
        else:
            c, moved = e - b, m - b
            terms = [ops.norm2(d), ops.norm2(c), ops.norm2(moved), ops.norm2(e), float(moved.dot(c))]
        totals = [t + x for t, x in zip(totals, terms)]
        if per_channel:
            products = [(x * y).reshape(stop - start, cols) for x, y in ((m, e), (e, e), (m, m))]
            for acc_row, acc_col, x in zip(by_row, by_col, products):
                acc_row[start:stop] = ops.sum(x, 1)
                acc_col += ops.sum(x, 0)
    return Sums(*totals, tuple(by_row), tuple(by_col))


@dataclass
class Agreement:
    """``ok`` / ``unchanged`` from the sums; ``noise`` is relative to ‖E‖ (the dtypes' rounding)."""

    sums: Sums
    noise_rel: float
    rtol: float

    @property
    def finite(self) -> bool:
        s = self.sums
        return all(math.isfinite(x) for x in (s.err2, s.change2, s.moved2, s.expected2, s.dot))

    @property
    def change(self) -> float:
        return math.sqrt(self.sums.change2)

    @property
    def noise(self) -> float:
        return self.noise_rel * math.sqrt(self.sums.expected2)

    @property
    def tolerance(self) -> float:
        return self.rtol * self.change + self.noise

    @property
    def ok(self) -> bool:
        return math.sqrt(self.sums.err2) <= self.tolerance

    @property
    def unchanged(self) -> bool:
        return self.change > self.noise and math.sqrt(self.sums.moved2) <= self.noise

    @property
    def rel_deviation(self) -> float | None:
        return math.sqrt(self.sums.err2) / self.change if self.change > 0 else None


def diagnose(a: Agreement, rank_scale: tuple[int, float] | None, kind: str) -> str | None:
    """What kind of wrong merge the sums fit, if any: a scaled change, or per-channel rescaling."""
    return _scaled_change(a, rank_scale) or _rescaled_channels(a, kind)


def _scaled_change(a: Agreement, rank_scale: tuple[int, float] | None) -> str | None:
    s = a.sums
    if s.change2 == 0:
        return None
    c = s.dot / s.change2
    if math.sqrt(max(s.moved2 - s.dot * c, 0.0)) > a.tolerance or abs(c - 1) <= a.rtol:
        return None
    text = f"the merge applied the adapter's change x{c:.4g}"
    reasons = [reason for reason, value in _scale_explanations(rank_scale) if abs(c - value) <= 1e-3 * abs(value)]
    return f"{text}: {', or '.join(reasons)}" if reasons else text


def _scale_explanations(rank_scale: tuple[int, float] | None) -> list[tuple[str, float]]:
    """(reason, the factor c it gives), the adapter's own scale first; several may fit one c."""
    known = [("the change was applied twice", 2.0), ("the change was applied with the wrong sign", -1.0)]
    if rank_scale is None:
        return known
    r, s = rank_scale
    return [(f"the scale alpha/r = {s:.4g} was not applied", 1 / s),
            (f"the scale {s:.4g} was applied twice", s),
            (f"alpha/sqrt(r) used instead of alpha/r (r = {r})", math.sqrt(r)),
            (f"alpha/r used instead of alpha/sqrt(r) (rsLoRA, r = {r})", 1 / math.sqrt(r))] + known


def _rescaled_channels(a: Agreement, kind: str) -> str | None:
    """Every channel along one axis parallel to the expected one, with other lengths."""
    for axis, (me, ee, mm) in (("output", a.sums.by_row), ("input", a.sums.by_col)):
        ops = ops_of(ee)
        live = ee > 0
        off_parallel = ops.clamp(ops.where(live, mm - me * me / ops.where(live, ee, 1.0), mm), 0.0).sum()
        if math.sqrt(float(off_parallel)) > a.tolerance:
            continue
        ratio = abs(me[live] / ee[live])
        lengths = f"length ratios {float(ratio.min()):.4g}..{float(ratio.max()):.4g} per {axis} channel"
        if kind == "dora":
            return (f"directions match, magnitudes do not ({lengths}): the DoRA magnitude was dropped "
                    "(merged as plain LoRA) or applied along the other axis")
        return f"directions match, magnitudes do not ({lengths})"
    return None


def transposed_rows(info: TensorInfo, full) -> Rows:
    """Rows of Mᵀ from the whole merged tensor (read once, only to test this diagnosis)."""
    m = full.reshape(info.shape[0], -1)
    return lambda start, stop: m[:, start:stop].T
