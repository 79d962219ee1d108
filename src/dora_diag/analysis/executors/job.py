"""What a comparison reads, as a plain picklable spec, and the opened inputs it names.

The driver and every Ray worker open the same ``Job`` the same way (``open_job``), so they
build the same plan from the headers alone and agree on what tensor ``i`` of it is.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass

from ...io.checkpoint import Checkpoint
from ...io.runs import Run, expand_runs
from ...io.safetensors_file import STREAM_READAHEAD, RowReader
from ...io.sources import FineTunedSource, open_base, open_source
from ...options import DEFAULT_BLOCK_BYTES
from ...runtime import exact_float32
from ..plan import Plan, make_plan


@dataclass(frozen=True)
class Job:
    """The arguments of ``compare`` that decide what is read and computed (paths as given)."""

    base: str
    finetuned: tuple[str, ...]
    axis: str = "out"
    device: str = "auto"
    split_fused: bool = False
    block_bytes: int = DEFAULT_BLOCK_BYTES
    allow_partial: bool = False


@dataclass
class Opened:
    base: Checkpoint
    runs: list[Run]
    sources: list[tuple]         # (CheckpointRef, FineTunedSource) in run and checkpoint order
    plan: Plan
    reader: RowReader            # the base's reader

    def bytes_read(self) -> int:
        return self.reader.bytes_read + sum(s.bytes_read() for _, s in self.sources)


def open_job(job: Job, stack: ExitStack) -> Opened:
    """Open the base, every fine-tuned checkpoint and plan them; ``stack`` closes them (and
    gives back the caller's fp32 matmul precision, ``runtime.exact_float32``)."""
    stack.enter_context(exact_float32())
    base = open_base(job.base)
    runs = expand_runs(list(job.finetuned))
    reader = stack.enter_context(RowReader(STREAM_READAHEAD))
    sources: list[tuple] = []
    for run in runs:
        for ref in run.checkpoints:
            source: FineTunedSource = open_source(ref.path, base)
            stack.callback(source.close)
            sources.append((ref, source))
    plan = make_plan(base, sources, split_fused=job.split_fused, allow_partial=job.allow_partial)
    return Opened(base, runs, sources, plan, reader)


def job_of(base: str | os.PathLike, finetuned, **options) -> Job:
    return Job(os.fspath(base), tuple(os.fspath(f) for f in finetuned), **options)
