"""Stream each planned base tensor once, in row blocks, against all its fine-tuned targets.

Memory stays bounded by the block size: one base block plus one fine-tuned block at a time,
and a few fp64 vectors per target (one value per channel).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..io.safetensors_file import RowReader
from ..metrics.kernels import ChannelChanges, ChannelSums, block_sums, channel_changes, chord_sums
from .plan import Target, TensorPlan

# Measured on 2 cores (benchmarks/): 1-2 MB blocks run the kernel at ~3 GB/s, 8 MB blocks at
# ~0.3 GB/s. Small blocks keep the fp32 temporaries in cache and below glibc's
# mmap threshold (freed buffers are reused instead of page-faulted in again).
DEFAULT_BLOCK_BYTES = 1024 * 1024


@dataclass
class TargetResult:
    target: Target
    changes: ChannelChanges
    nonfinite_in: tuple[str, ...] = ()   # "base" and/or "fine-tuned": sides with NaN/Inf channels

    @property
    def nonfinite(self) -> int:
        """Channels with NaN/Inf (or an overflowing sum): excluded from the means."""
        return int(self.changes.nonfinite.sum())


def _row_blocks(rows: int, row_bytes: int, block_bytes: int) -> Iterator[tuple[int, int]]:
    step = max(1, block_bytes // max(1, row_bytes))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


class Streamer:
    """Computes per-channel changes for every target of a tensor plan."""

    def __init__(self, reader: RowReader, device: torch.device, axis: str = "out",
                 block_bytes: int = DEFAULT_BLOCK_BYTES, on_bytes: Callable[[int], None] | None = None):
        self.reader, self.device, self.axis = reader, device, axis
        self.block_bytes, self.on_bytes = block_bytes, on_bytes or (lambda n: None)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dora-diag-read")
        self._pinned: torch.Tensor | None = None
        self._copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def reduce_axis(self, plan: TensorPlan) -> str:
        """Kernel axis on the stored layout: output channels of a (in, out) tensor are columns."""
        return self.axis if not plan.transposed else ("in" if self.axis == "out" else "out")

    def run(self, plan: TensorPlan) -> list[TargetResult]:
        axis = self.reduce_axis(plan)
        sums = [ChannelSums.zeros(t.rows if axis == "out" else plan.info.row_elements, self.device)
                for t in plan.targets]
        for a, read, start, stop in self._blocks(plan, plan.targets):
            for i, (t, acc) in enumerate(zip(plan.targets, sums)):
                if start >= t.rows:
                    continue
                n = min(stop, t.rows) - start
                part = self._factor_sums(t, a[:n], start, axis)
                if part is None:
                    c = read[i] if i in read else self._target_rows(t, a, start, stop)
                    part = block_sums(a[:n], c, axis)
                acc.add_(part, slice(start, start + n) if axis == "out" else None)
        results = []
        for t, acc in zip(plan.targets, sums):
            changes = channel_changes(acc)
            if bool(changes.refine.any()):
                self._refine(plan, t, acc, changes, axis)
            results.append(TargetResult(t, changes.cpu(), _nonfinite_sides(acc, changes)))
        return results

    def _blocks(self, plan: TensorPlan, targets: list[Target], limit: int | None = None
                ) -> Iterator[tuple[torch.Tensor, dict[int, torch.Tensor], int, int]]:
        """Base row blocks ``(rows, cols)`` on the device, with the rows of full fine-tuned
        targets (by index in ``targets``) already read.

        A worker thread loads block i+1 (reads release the GIL) while the caller computes on
        block i, so I/O overlaps compute; at most two blocks per source are in memory.
        """
        info = plan.info
        rows = info.shape[0] if limit is None else limit
        blocks = list(_row_blocks(rows, info.row_bytes, self.block_bytes))
        if not blocks:
            return
        pending = self._pool.submit(self._load, plan, targets, *blocks[0])
        for i in range(len(blocks)):
            a, read, nbytes = pending.result()
            if i + 1 < len(blocks):
                self.reader.advise(info, *blocks[i + 1])
                pending = self._pool.submit(self._load, plan, targets, *blocks[i + 1])
            self.on_bytes(nbytes)
            if self.device.type == "cuda":
                # Tensors staged by the worker's copy stream are used on this thread's stream.
                for x in (a, *read.values()):
                    x.record_stream(torch.cuda.current_stream(self.device))
            yield a, read, *blocks[i]

    def _load(self, plan: TensorPlan, targets: list[Target], start: int, stop: int
              ) -> tuple[torch.Tensor, dict[int, torch.Tensor], int]:
        block = self.reader.read_rows(plan.info, start, stop)
        nbytes = block.numel() * block.element_size()
        read: dict[int, torch.Tensor] = {}
        for i, t in enumerate(targets):
            if t.source.kind == "full" and start < t.rows:
                c = t.source.rows(t.name, block, start, min(stop, t.rows))
                nbytes += c.numel() * c.element_size()
                read[i] = self._stage(c.reshape(c.shape[0], -1))
        return self._stage(block.reshape(stop - start, -1)), read, nbytes

    def _stage(self, x: torch.Tensor) -> torch.Tensor:
        """Move a host block to the device. For CUDA: through a reused pinned buffer and an
        asynchronous copy on a side stream, waited for here in the worker thread."""
        if self.device.type != "cuda":
            return x
        nbytes = x.numel() * x.element_size()
        if self._pinned is None or self._pinned.numel() < nbytes:
            self._pinned = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        staged = self._pinned[:nbytes].view(x.dtype).view(x.shape)
        staged.copy_(x)
        with torch.cuda.stream(self._copy_stream):
            out = staged.to(self.device, non_blocking=True)
        self._copy_stream.synchronize()
        return out

    def _factor_sums(self, t: Target, a: torch.Tensor, start: int, axis: str) -> ChannelSums | None:
        """Sums straight from an adapter's low-rank factors, when its source offers them."""
        fast = getattr(t.source, "channel_sums", None)
        return None if fast is None else fast(t.name, a, start, start + a.shape[0], axis)

    def _target_rows(self, t: Target, a: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Rows computed from the base block (adapters); full checkpoints are read in ``_load``."""
        stop = min(stop, t.rows)
        c = t.source.rows(t.name, a[: stop - start], start, stop)
        return c.reshape(stop - start, -1).to(self.device)

    def _refine(self, plan: TensorPlan, t: Target, acc: ChannelSums, ch: ChannelChanges, axis: str) -> None:
        """Second pass for nearly radial channels: fp64 chord instead of the difference formula."""
        a_norm, c_norm = acc.a2.sqrt(), acc.c2.sqrt()
        safe = lambda n: n.where(n > 0, torch.ones_like(n))  # noqa: E731
        chord = torch.zeros_like(a_norm)
        for a, read, start, stop in self._blocks(plan, [t], limit=t.rows):
            c = read[0] if read else self._target_rows(t, a, start, stop)
            if axis == "out":
                chord[start:stop] = chord_sums(a, c, safe(a_norm[start:stop]), safe(c_norm[start:stop]), axis)
            else:
                chord += chord_sums(a, c, safe(a_norm), safe(c_norm), axis)
        ch.dd = torch.where(ch.refine, (chord / 2).clamp(0, 2), ch.dd)


def _nonfinite_sides(acc: ChannelSums, ch: ChannelChanges) -> tuple[str, ...]:
    if not bool(ch.nonfinite.any()):
        return ()
    sides = tuple(side for side, x in (("base", acc.a2), ("fine-tuned", acc.c2)) if not bool(x.isfinite().all()))
    return sides or ("fine-tuned",)   # finite norms, overflowing difference: huge fine-tuned values
