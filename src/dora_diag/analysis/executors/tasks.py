"""The unit of distributed work: one planned base tensor's row range, and how ranges recombine.

Where channels are stored rows (kernel axis "out") a range holds whole channels, so its
per-channel results are final and the tensor's results are the ranges' concatenated. Ranges
start at multiples of the stream's block rows, so each streams exactly the blocks a
whole-tensor pass does: the numbers are bit for bit those of the local executor. Where
channels are columns (``axis="in"``, or a stored (in, out) tensor) every row adds to every
channel, and the tensor is one task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import InputError
from ...metrics.kernels import ChannelChanges
from ..plan import Plan, TensorPlan
from ..stream import Streamer, TargetResult, block_rows, reduce_axis, stream_block_bytes
from ...options import DEFAULT_TASK_BYTES
from .job import Job, Opened


@dataclass(frozen=True)
class RangeTask:
    index: int        # position of the tensor in ``plan.tensors``
    name: str         # its base name: a worker whose plan disagrees refuses the task
    start: int        # stored rows start:stop of the base tensor
    stop: int
    nbytes: int       # bytes it streams: base rows and the full checkpoints' rows


@dataclass
class RangeResult:
    """Per target of the tensor: its channels' changes (rows start:stop) and the sides whose
    norms are not finite there."""

    parts: list[tuple[ChannelChanges, tuple[str, ...]]]
    bytes_read: int
    device: str


def split(plan: Plan, job: Job, task_bytes: int = DEFAULT_TASK_BYTES) -> list[RangeTask]:
    """Tasks of about ``task_bytes`` each (at least one block), in plan order."""
    tasks = []
    for i, tp in enumerate(plan.tensors):
        rows = tp.info.shape[0]
        row_bytes = tp.info.row_bytes * (1 + sum(t.source.stored for t in tp.targets))
        kernel_axis = reduce_axis(job.axis, tp)
        if kernel_axis == "out":
            step = block_rows(tp.info.row_bytes, stream_block_bytes(job.block_bytes, kernel_axis))
            per_task = max(1, task_bytes // max(1, row_bytes * step)) * step
        else:
            per_task = rows
        tasks.extend(RangeTask(i, tp.info.name, lo, min(rows, lo + per_task), (min(rows, lo + per_task) - lo) * row_bytes)
                     for lo in range(0, rows, per_task))
    return tasks


def run_range(streamer: Streamer, tp: TensorPlan, task: RangeTask) -> list[tuple[ChannelChanges, tuple[str, ...]]]:
    span = None if reduce_axis(streamer.axis, tp) == "in" else (task.start, task.stop)
    return [(r.changes, r.nonfinite_norms) for r in streamer.run(tp, span)]


def merge(tp: TensorPlan, pieces: list[RangeResult]) -> list[TargetResult]:
    """The tensor's results from its ranges' (in row order), as one whole-tensor pass gives them."""
    out = []
    for j, target in enumerate(tp.targets):
        parts = [p.parts[j] for p in pieces]
        changes = ChannelChanges(*(np.concatenate([getattr(c, f) for c, _ in parts]) for f in ChannelChanges.FIELDS))
        norms = {side for _, sides in parts for side in sides}
        out.append(TargetResult(target, changes, tuple(s for s in ("base", "fine-tuned") if s in norms)))
    return out


def check_task(opened: Opened, task: RangeTask) -> TensorPlan:
    """The worker's plan entry for ``task``; a different tensor there means the files differ."""
    plans = opened.plan.tensors
    if task.index >= len(plans) or plans[task.index].info.name != task.name:
        raise InputError(f"{task.name}: this worker's copy of the inputs differs from the driver's "
                         "(every node must see the same files at the same paths)")
    return plans[task.index]
