"""Stream each planned base tensor once, in row blocks, against all its fine-tuned targets.

Memory stays bounded by the block size: on CPU a reused read buffer for the base and one that
every full fine-tuned target is read into in turn (each is consumed before the next is read),
whatever the number of checkpoints; on CUDA pinned buffers per target, in two sets; one fp32
scratch; and a few fp64 vectors per target (one value per channel).

On CPU the arrays are numpy's and torch is not imported; on CUDA they are torch tensors
(``arrays.ops_for``). Adapters compute their rows with torch: their inputs and results cross
over without copies (``_to_source``, ``_to_engine``).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

from ..arrays import NUMPY, ieee, ops_for, ops_of, torch_ops
from ..io.fp8 import Fp8Scale
from ..io.safetensors_file import RowReader
from ..options import DEFAULT_BLOCK_BYTES
from ..metrics.kernels import (ChannelChanges, ChannelSums, Scratch, apply_chord, block_sums, channel_changes,
                               chord_sums, square_sums, unsure_c2)
from .plan import Target, TensorPlan

# Column sums (``axis="in"``) keep 2.5x more fp32 scratch per element than row sums and run
# fastest on a quarter of the block size (benchmarks/).
IN_AXIS_BLOCK_SHARE = 4


@dataclass
class TargetResult:
    target: Target
    changes: ChannelChanges
    nonfinite_norms: tuple[str, ...] = ()   # "base" and/or "fine-tuned": sides whose norm sums are NaN/Inf

    @property
    def nonfinite(self) -> int:
        """Channels with NaN/Inf (or an overflowing sum): excluded from the means."""
        return int(self.changes.nonfinite.sum())

    @property
    def nonfinite_in(self) -> tuple[str, ...]:
        """Sides with NaN/Inf channels; finite norms with an overflowing difference mean huge
        fine-tuned values."""
        if not bool(self.changes.nonfinite.any()):
            return ()
        return self.nonfinite_norms or ("fine-tuned",)


def reduce_axis(axis: str, plan: TensorPlan) -> str:
    """Kernel axis on the stored layout: output channels of a (in, out) tensor are columns."""
    return axis if not plan.transposed else ("in" if axis == "out" else "out")


def stream_block_bytes(block_bytes: int, kernel_axis: str) -> int:
    """The block size a tensor streams with, given its kernel axis."""
    return block_bytes // (1 if kernel_axis == "out" else IN_AXIS_BLOCK_SHARE)


def block_rows(row_bytes: int, block_bytes: int) -> int:
    """Rows per streamed block: row ranges that start at multiples of it stream the very blocks
    a whole-tensor pass does (``executors.tasks`` splits tensors so)."""
    return max(1, block_bytes // max(1, row_bytes))


def _row_blocks(start: int, stop: int, row_bytes: int, block_bytes: int) -> Iterator[tuple[int, int]]:
    step = block_rows(row_bytes, block_bytes)
    for lo in range(start, stop, step):
        yield lo, min(stop, lo + step)


class _ReadBuffers:
    """Reused byte buffers, one per source, that row blocks are read into.

    For CUDA they are pinned and come in two sets, so block i+1 can be read into one set while
    the asynchronous host-to-device copy of block i from the other may still run; an event per
    set tells when it may be refilled.
    """

    def __init__(self, ops, cuda: bool):
        self._ops, self._cuda = ops, cuda
        sets = 2 if self._cuda else 1
        self._sets: list[dict] = [{} for _ in range(sets)]
        self._copied: list = [None] * sets   # torch.cuda.Event per set, once used
        self._slot = 0

    def next_set(self) -> None:
        self._slot = (self._slot + 1) % len(self._sets)
        done = self._copied[self._slot]
        if done is not None:
            done.synchronize()

    def get(self, key: int, nbytes: int):
        buf = self._sets[self._slot].get(key)
        if buf is None or buf.shape[0] < nbytes:
            buf = self._ops.empty_bytes(nbytes, pinned=self._cuda)
            self._sets[self._slot][key] = buf
        return buf

    def to_device(self, x, device):
        if not self._cuda:
            return x
        torch = self._ops.t
        out = x.to(device, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(device))
        self._copied[self._slot] = done
        return out


class Cancelled(Exception):
    """A streamer was stopped because another one failed or the run was interrupted."""


class Streamer:
    """Computes per-channel changes for every target of a tensor plan.

    Reads are synchronous; they overlap the compute all the same: on CPU the reader keeps the
    kernel's asynchronous read-ahead a window in front of the stream, on CUDA the copies and
    kernels run asynchronously while the next block is read.
    """

    def __init__(self, reader: RowReader, device, axis: str = "out",
                 block_bytes: int = DEFAULT_BLOCK_BYTES, on_bytes: Callable[[int], None] | None = None):
        """``device``: "cpu" or "cuda[:N]" (``runtime.resolve_device``), or a torch.device to
        stream torch tensors on the CPU too (``arrays.ops_for``)."""
        self.ops = ops_for(device)
        self.reader, self.device, self.axis = reader, self.ops.device(device), axis
        self.block_bytes, self.on_bytes = block_bytes, on_bytes or (lambda n: None)
        self._cuda = str(device).startswith("cuda")
        self._buffers = _ReadBuffers(self.ops, self._cuda)
        self._scratch = Scratch()
        self.cancel = threading.Event()

    def reduce_axis(self, plan: TensorPlan) -> str:
        return reduce_axis(self.axis, plan)

    def block_bytes_for(self, plan: TensorPlan) -> int:
        return stream_block_bytes(self.block_bytes, self.reduce_axis(plan))

    def run(self, plan: TensorPlan, span: tuple[int, int] | None = None) -> list[TargetResult]:
        """Every target's changes; ``span`` = (start, stop) restricts them to the channels of
        those stored rows (only where channels are rows: ``reduce_axis(plan) == "out"``)."""
        with ieee():
            return self._run(plan, span)

    def _run(self, plan: TensorPlan, span: tuple[int, int] | None) -> list[TargetResult]:
        axis = self.reduce_axis(plan)
        lo, hi = span or (0, plan.info.shape[0])
        assert axis == "out" or (lo, hi) == (0, plan.info.shape[0]), "column channels need every row"
        sums = [ChannelSums.zeros(max(0, min(hi, t.rows) - lo) if axis == "out" else plan.info.row_elements,
                                  self.device) for t in plan.targets]
        for a, read, start, stop in self._blocks(plan, plan.targets, lo, hi):
            for i, (t, acc) in enumerate(zip(plan.targets, sums)):
                if start >= t.rows:
                    continue
                n = min(stop, t.rows) - start
                part = self._factor_sums(t, a[:n], start, axis)
                if part is None:
                    c = read(i) if t.source.stored else self._target_rows(t, a, start, stop)
                    part = block_sums(a[:n], c, axis, self._scratch)
                acc.add_(part, slice(start - lo, start - lo + n) if axis == "out" else None)
        results = []
        for t, acc in zip(plan.targets, sums):
            unsure = unsure_c2(acc)
            if bool(unsure.any()):
                # Per channel, so that a channel's value does not depend on which others share its pass.
                c2 = self._channel_pass(plan, t, axis, lambda a, c, channels: square_sums(c, axis), lo, hi)
                acc.c2 = self.ops.where(unsure, c2, acc.c2)
            changes = channel_changes(acc)
            if bool(changes.refine.any()):
                self._refine(plan, t, acc, changes, axis, lo, hi)
            results.append(TargetResult(t, changes.numpy(), _nonfinite_norms(acc)))
        return results

    def _blocks(self, plan: TensorPlan, targets: list[Target], lo: int, hi: int
                ) -> Iterator[tuple[object, Callable[[int], object], int, int]]:
        """Base row blocks ``(rows, cols)`` of stored rows ``lo:hi`` on the device, with
        ``read(i)`` giving the same rows of stored target ``targets[i]``. A block lives in
        reused buffers: it is valid until the next one is asked for, and a target's rows until
        the next target's are read."""
        info = plan.info
        scales = self._scale_grids(plan, targets)
        for start, stop in _row_blocks(lo, hi, info.row_bytes, self.block_bytes_for(plan)):
            if self.cancel.is_set():
                raise Cancelled
            self._buffers.next_set()
            block = self.reader.read_rows(info, start, stop, self._buffers.get(-1, (stop - start) * info.row_bytes))
            self.on_bytes((stop - start) * info.row_bytes)
            a = self._buffers.to_device(block.reshape(stop - start, -1), self.device)
            if -1 in scales:
                a = plan.scale.dequantize(a, start, scales[-1])
            yield a, self._reader_of(targets, block, start, stop, scales), start, stop

    def _reader_of(self, targets: list[Target], block, start: int, stop: int, scales: dict) -> Callable[[int], object]:
        """``read(i)``: rows ``start:stop`` of stored target ``targets[i]`` on the device. On CPU
        they all share one buffer (so memory does not grow with the number of checkpoints); on
        CUDA each has its own, since its asynchronous copy may still be running."""
        def read(i: int):
            t = targets[i]
            n = min(stop, t.rows) - start
            nbytes = n * t.source.infos()[t.name].row_bytes
            buf = self._buffers.get(i if self._cuda else 0, nbytes)
            c = t.source.rows(t.name, block, start, start + n, buf)
            self.on_bytes(nbytes)
            rows = self._buffers.to_device(c.reshape(n, -1), self.device)
            return t.scale.dequantize(rows, start, scales[i]) if i in scales else rows
        return read

    def _scale_grids(self, plan: TensorPlan, targets: list[Target]) -> dict:
        """Whole fp8 scale tensors (small) on the device, by target index (-1: the base)."""
        sides = [(-1, plan.scale), *((i, t.scale) for i, t in enumerate(targets))]
        return {i: self.ops.to(Fp8Scale.grid(self.reader.read_all(s.info, self.ops)), self.device)
                for i, s in sides if s is not None}

    def _factor_sums(self, t: Target, a, start: int, axis: str) -> ChannelSums | None:
        """Sums straight from an adapter's low-rank factors, when its source offers them."""
        if t.source.stored:
            return None
        sums = t.source.channel_sums(t.name, self._to_source(a), start, start + a.shape[0], axis)
        return None if sums is None else ChannelSums(*map(self._to_engine, (sums.a2, sums.c2, sums.d2, sums.p)))

    def _target_rows(self, t: Target, a, start: int, stop: int):
        """Rows computed from the base block (adapters); stored targets are read by ``read(i)``."""
        stop = min(stop, t.rows)
        c = t.source.rows(t.name, self._to_source(a[: stop - start]), start, stop)
        return self.ops.to(self._to_engine(c.reshape(stop - start, -1)), self.device)

    def _to_source(self, x):
        """Base rows as an adapter computes with them: torch tensors (from numpy, sharing memory)."""
        return torch_ops().from_numpy(x) if self.ops is NUMPY else x

    def _to_engine(self, x):
        """An adapter's torch result as the engine's array (numpy on CPU: shared memory)."""
        return torch_ops().numpy(x) if self.ops is NUMPY else x

    def _refine(self, plan: TensorPlan, t: Target, acc: ChannelSums, ch: ChannelChanges, axis: str,
                lo: int, hi: int) -> None:
        """Second pass for nearly radial channels: fp64 chord instead of the difference formula."""
        safe = lambda n: self.ops.where(n > 0, n, 1.0)  # noqa: E731
        a_norm, c_norm = safe(self.ops.sqrt(acc.a2)), safe(self.ops.sqrt(acc.c2))
        apply_chord(ch, self._channel_pass(plan, t, axis, lambda a, c, channels: chord_sums(
            a, c, a_norm[channels], c_norm[channels], axis), lo, hi))

    def _channel_pass(self, plan: TensorPlan, t: Target, axis: str,
                      fn: Callable[[object, object, slice], object], lo: int, hi: int):
        """Stream target ``t``'s rows ``lo:hi`` again and total ``fn(a, c, channels)`` per channel
        in fp64; ``channels`` selects the block's channels (all of them for ``axis="in"``)."""
        hi = min(hi, t.rows)
        total = self.ops.zeros(max(0, hi - lo) if axis == "out" else plan.info.row_elements, self.ops.float64,
                               self.device)
        for a, read, start, stop in self._blocks(plan, [t], lo, hi):
            c = read(0) if t.source.stored else self._target_rows(t, a, start, stop)
            if axis == "out":
                total[start - lo:stop - lo] = fn(a, c, slice(start - lo, stop - lo))
            else:
                total += fn(a, c, slice(None))
        return total


def run_all(plans: list[TensorPlan], streamers: list[Streamer]) -> Iterator[list[TargetResult]]:
    """Every plan's results, in order. With several streamers, as many tensors run at once, one
    per thread (reads and numpy/torch ops release the GIL); when the caller stops early (an error,
    Ctrl-C) the others stop at their next block before this returns. Close it when done."""
    if len(streamers) == 1:
        yield from map(streamers[0].run, plans)
        return
    free: queue.SimpleQueue[Streamer] = queue.SimpleQueue()
    for s in streamers:
        free.put(s)

    def work(plan: TensorPlan) -> list[TargetResult]:
        s = free.get()   # never waits: one streamer per pool thread
        try:
            return s.run(plan)
        finally:
            free.put(s)

    pool = ThreadPoolExecutor(len(streamers), thread_name_prefix="dora-diag-stream")
    try:
        yield from pool.map(work, plans)
    finally:
        for s in streamers:
            s.cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)


def _nonfinite_norms(acc: ChannelSums) -> tuple[str, ...]:
    ops = ops_of(acc.a2)
    return tuple(side for side, x in (("base", acc.a2), ("fine-tuned", acc.c2)) if not bool(ops.isfinite(x).all()))
