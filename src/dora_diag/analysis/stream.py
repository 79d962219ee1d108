"""Stream each planned base tensor once, in row blocks, against all its fine-tuned targets.

Memory stays bounded by the block size: on CPU a reused read buffer for the base and one that
every full fine-tuned target is read into in turn (each is consumed before the next is read),
whatever the number of checkpoints; on CUDA pinned buffers per target, in two sets; one fp32
scratch; and a few fp64 vectors per target (one value per channel).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

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

    def __init__(self, device: torch.device):
        self._cuda = device.type == "cuda"
        sets = 2 if self._cuda else 1
        self._sets: list[dict[int, torch.Tensor]] = [{} for _ in range(sets)]
        self._copied: list[torch.cuda.Event | None] = [None] * sets
        self._slot = 0

    def next_set(self) -> None:
        self._slot = (self._slot + 1) % len(self._sets)
        done = self._copied[self._slot]
        if done is not None:
            done.synchronize()

    def get(self, key: int, nbytes: int) -> torch.Tensor:
        buf = self._sets[self._slot].get(key)
        if buf is None or buf.numel() < nbytes:
            buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self._cuda)
            self._sets[self._slot][key] = buf
        return buf

    def to_device(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        if not self._cuda:
            return x
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

    def __init__(self, reader: RowReader, device: torch.device, axis: str = "out",
                 block_bytes: int = DEFAULT_BLOCK_BYTES, on_bytes: Callable[[int], None] | None = None):
        self.reader, self.device, self.axis = reader, device, axis
        self.block_bytes, self.on_bytes = block_bytes, on_bytes or (lambda n: None)
        self._buffers = _ReadBuffers(device)
        self._scratch = Scratch()
        self.cancel = threading.Event()

    def reduce_axis(self, plan: TensorPlan) -> str:
        return reduce_axis(self.axis, plan)

    def block_bytes_for(self, plan: TensorPlan) -> int:
        return stream_block_bytes(self.block_bytes, self.reduce_axis(plan))

    def run(self, plan: TensorPlan, span: tuple[int, int] | None = None) -> list[TargetResult]:
        """Every target's changes; ``span`` = (start, stop) restricts them to the channels of
        those stored rows (only where channels are rows: ``reduce_axis(plan) == "out"``)."""
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
                acc.c2 = torch.where(unsure, c2, acc.c2)
            changes = channel_changes(acc)
            if bool(changes.refine.any()):
                self._refine(plan, t, acc, changes, axis, lo, hi)
            results.append(TargetResult(t, changes.cpu(), _nonfinite_norms(acc)))
        return results

    def _blocks(self, plan: TensorPlan, targets: list[Target], lo: int, hi: int
                ) -> Iterator[tuple[torch.Tensor, Callable[[int], torch.Tensor], int, int]]:
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
            self.on_bytes(block.numel() * block.element_size())
            a = self._buffers.to_device(block.reshape(stop - start, -1), self.device)
            if -1 in scales:
                a = plan.scale.dequantize(a, start, scales[-1])
            yield a, self._reader_of(targets, block, start, stop, scales), start, stop

    def _reader_of(self, targets: list[Target], block: torch.Tensor, start: int, stop: int,
                   scales: dict[int, torch.Tensor]) -> Callable[[int], torch.Tensor]:
        """``read(i)``: rows ``start:stop`` of stored target ``targets[i]`` on the device. On CPU
        they all share one buffer (so memory does not grow with the number of checkpoints); on
        CUDA each has its own, since its asynchronous copy may still be running."""
        def read(i: int) -> torch.Tensor:
            t = targets[i]
            n = min(stop, t.rows) - start
            buf = self._buffers.get(i if self.device.type == "cuda" else 0, n * t.source.infos()[t.name].row_bytes)
            c = t.source.rows(t.name, block, start, start + n, buf)
            self.on_bytes(c.numel() * c.element_size())
            rows = self._buffers.to_device(c.reshape(n, -1), self.device)
            return t.scale.dequantize(rows, start, scales[i]) if i in scales else rows
        return read

    def _scale_grids(self, plan: TensorPlan, targets: list[Target]) -> dict[int, torch.Tensor]:
        """Whole fp8 scale tensors (small) on the device, by target index (-1: the base)."""
        sides = [(-1, plan.scale), *((i, t.scale) for i, t in enumerate(targets))]
        return {i: Fp8Scale.grid(self.reader.read_all(s.info)).to(self.device) for i, s in sides if s is not None}

    def _factor_sums(self, t: Target, a: torch.Tensor, start: int, axis: str) -> ChannelSums | None:
        """Sums straight from an adapter's low-rank factors, when its source offers them."""
        return t.source.channel_sums(t.name, a, start, start + a.shape[0], axis)

    def _target_rows(self, t: Target, a: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Rows computed from the base block (adapters); stored targets are read by ``read(i)``."""
        stop = min(stop, t.rows)
        c = t.source.rows(t.name, a[: stop - start], start, stop)
        return c.reshape(stop - start, -1).to(self.device)

    def _refine(self, plan: TensorPlan, t: Target, acc: ChannelSums, ch: ChannelChanges, axis: str,
                lo: int, hi: int) -> None:
        """Second pass for nearly radial channels: fp64 chord instead of the difference formula."""
        safe = lambda n: n.where(n > 0, torch.ones_like(n))  # noqa: E731
        a_norm, c_norm = safe(acc.a2.sqrt()), safe(acc.c2.sqrt())
        apply_chord(ch, self._channel_pass(plan, t, axis, lambda a, c, channels: chord_sums(
            a, c, a_norm[channels], c_norm[channels], axis), lo, hi))

    def _channel_pass(self, plan: TensorPlan, t: Target, axis: str,
                      fn: Callable[[torch.Tensor, torch.Tensor, slice], torch.Tensor], lo: int, hi: int
                      ) -> torch.Tensor:
        """Stream target ``t``'s rows ``lo:hi`` again and total ``fn(a, c, channels)`` per channel
        in fp64; ``channels`` selects the block's channels (all of them for ``axis="in"``)."""
        hi = min(hi, t.rows)
        total = torch.zeros(max(0, hi - lo) if axis == "out" else plan.info.row_elements, dtype=torch.float64,
                            device=self.device)
        for a, read, start, stop in self._blocks(plan, [t], lo, hi):
            c = read(0) if t.source.stored else self._target_rows(t, a, start, stop)
            if axis == "out":
                total[start - lo:stop - lo] = fn(a, c, slice(start - lo, stop - lo))
            else:
                total += fn(a, c, slice(None))
        return total


def run_all(plans: list[TensorPlan], streamers: list[Streamer]) -> Iterator[list[TargetResult]]:
    """Every plan's results, in order. With several streamers, as many tensors run at once, one
    per thread (reads and torch ops release the GIL); when the caller stops early (an error,
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
    return tuple(side for side, x in (("base", acc.a2), ("fine-tuned", acc.c2)) if not bool(x.isfinite().all()))
