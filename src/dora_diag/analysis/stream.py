"""Stream each planned base tensor once, in row blocks, against all its fine-tuned targets.

Memory stays bounded by the block size: one base block plus one fine-tuned block at a time,
and a few fp64 vectors per target (one value per channel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..io.safetensors_file import RowReader
from ..metrics.kernels import ChannelChanges, ChannelSums, block_sums, channel_changes, chord_sums
from .plan import Target, TensorPlan

DEFAULT_BLOCK_BYTES = 16 * 1024 * 1024


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

    def reduce_axis(self, plan: TensorPlan) -> str:
        """Kernel axis on the stored layout: output channels of a (in, out) tensor are columns."""
        return self.axis if not plan.transposed else ("in" if self.axis == "out" else "out")

    def run(self, plan: TensorPlan) -> list[TargetResult]:
        axis = self.reduce_axis(plan)
        shape = plan.info.shape
        channels = (lambda rows: rows) if axis == "out" else (lambda rows: _cols(shape))
        sums = [ChannelSums.zeros(channels(t.rows), self.device) for t in plan.targets]
        for a, start, stop in self._blocks(plan):
            for t, acc in zip(plan.targets, sums):
                if start >= t.rows:
                    continue
                n = min(stop, t.rows) - start
                part = self._factor_sums(t, a[:n], start, axis)
                if part is None:
                    part = block_sums(a[:n], self._target_rows(t, a, start, stop), axis)
                acc.add_(part, slice(start, start + n) if axis == "out" else None)
        results = []
        for t, acc in zip(plan.targets, sums):
            changes = channel_changes(acc)
            if bool(changes.refine.any()):
                self._refine(plan, t, acc, changes, axis)
            results.append(TargetResult(t, changes.cpu(), _nonfinite_sides(acc, changes)))
        return results

    def _blocks(self, plan: TensorPlan, limit: int | None = None) -> Iterator[tuple[torch.Tensor, int, int]]:
        info = plan.info
        rows = info.shape[0] if limit is None else limit
        blocks = list(_row_blocks(rows, info.row_bytes, self.block_bytes))
        for i, (start, stop) in enumerate(blocks):
            if i + 1 < len(blocks):
                self.reader.advise(info, *blocks[i + 1])
            block = self.reader.read_rows(info, start, stop)
            self.on_bytes(block.numel() * block.element_size())
            yield block.reshape(stop - start, -1).to(self.device, non_blocking=True), start, stop

    def _factor_sums(self, t: Target, a: torch.Tensor, start: int, axis: str) -> ChannelSums | None:
        """Sums straight from an adapter's low-rank factors, when its source offers them."""
        fast = getattr(t.source, "channel_sums", None)
        return None if fast is None else fast(t.name, a, start, start + a.shape[0], axis)

    def _target_rows(self, t: Target, a: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        stop = min(stop, t.rows)
        c = t.source.rows(t.name, a[: stop - start], start, stop)
        self.on_bytes(c.numel() * c.element_size() if t.source.kind == "full" else 0)
        return c.reshape(stop - start, -1).to(self.device, non_blocking=True)

    def _refine(self, plan: TensorPlan, t: Target, acc: ChannelSums, ch: ChannelChanges, axis: str) -> None:
        """Second pass for nearly radial channels: fp64 chord instead of the difference formula."""
        a_norm, c_norm = acc.a2.sqrt(), acc.c2.sqrt()
        safe = lambda n: n.where(n > 0, torch.ones_like(n))  # noqa: E731
        chord = torch.zeros_like(a_norm)
        for a, start, stop in self._blocks(plan, limit=t.rows):
            c = self._target_rows(t, a, start, stop)
            if axis == "out":
                chord[start:stop] = chord_sums(a, c, safe(a_norm[start:stop]), safe(c_norm[start:stop]), axis)
            else:
                chord += chord_sums(a, c, safe(a_norm), safe(c_norm), axis)
        ch.dd = torch.where(ch.refine, (chord / 2).clamp(0, 2), ch.dd)


def _cols(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape[1:]:
        n *= s
    return n


def _nonfinite_sides(acc: ChannelSums, ch: ChannelChanges) -> tuple[str, ...]:
    if not bool(ch.nonfinite.any()):
        return ()
    sides = tuple(side for side, x in (("base", acc.a2), ("fine-tuned", acc.c2)) if not bool(x.isfinite().all()))
    return sides or ("fine-tuned",)   # finite norms, overflowing difference: huge fine-tuned values
