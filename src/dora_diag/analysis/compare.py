"""``compare()``: the library function behind ``dora-diag compare``."""

from __future__ import annotations

import os
import time
from contextlib import ExitStack, closing

from ..errors import InputError
from ..io.method import run_method
from ..runtime import resolve_device, tune_allocator
from ..options import AXES, DEFAULT_BLOCK_BYTES
from ..records import CheckpointInfo, Meta, RunInfo
from .analysis import Analysis
from .executors import DEFAULT_TASK_BYTES, job_of, make_executor, open_job
from .executors.local import stream_bytes
from .table import build_table, rows_for
from .warnings import WarningLog, base_hints

class Progress:
    """Callbacks for long work; the CLI plugs a progress bar in here."""

    def start(self, total_bytes: int, total_tensors: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def tensor_done(self, name: str) -> None: ...
    def finish(self) -> None: ...


def compare(base: str | os.PathLike, *finetuned: str | os.PathLike, axis: str = "out",
            device: str = "auto", split_fused: bool = False, block_bytes: int = DEFAULT_BLOCK_BYTES,
            progress: Progress | None = None, allow_partial: bool = False, executor: str = "local",
            ray_address: str | None = None, task_bytes: int = DEFAULT_TASK_BYTES) -> Analysis:
    """Compare fine-tuned checkpoints with ``base`` tensor by tensor.

    Each ``finetuned`` item is ``[LABEL=]PATH``: a checkpoint directory or ``.safetensors`` file,
    a PEFT adapter, or a run directory of ``checkpoint-N/`` folders. ``axis="out"`` measures per
    output channel (the DoRA convention), ``"in"`` per input column (LyCORIS' default).
    ``executor="local"`` streams on this machine (on CPU several tensors at once, torch's
    intra-op threads divided among them); ``"ray"`` splits the tensors into row ranges of about
    ``task_bytes`` run on the Ray cluster at ``ray_address`` (``RAY_ADDRESS`` when None), which
    must see the same paths; the results are the same to the bit. An adapter that changes
    tensors the base lacks is an ``InputError`` unless ``allow_partial``.
    """
    if axis not in AXES:
        raise InputError(f"axis must be 'out' or 'in', not {axis!r}")
    if not finetuned:
        raise InputError("give at least one fine-tuned checkpoint or run to compare with the base")
    progress = progress or Progress()
    tune_allocator()
    runner = make_executor(executor, ray_address, task_bytes)
    if executor == "local":
        # Once, and before any file is opened (an unusable device is an error); Ray workers
        # resolve it each on their own machine.
        device = str(resolve_device(device))
    started = time.perf_counter()
    job = job_of(base, finetuned, axis=axis, device=device, split_fused=split_fused, block_bytes=block_bytes,
                 allow_partial=allow_partial)
    with ExitStack() as stack:
        opened = open_job(job, stack)
        plan = opened.plan
        if not plan.tensors:
            raise InputError(_nothing_matched(base, plan))
        progress.start(stream_bytes(opened), len(plan.tensors))
        rows: list[dict] = []
        log = WarningLog()
        try:
            with closing(runner.results(job, opened, progress.advance)) as all_results:
                for tp, results in zip(plan.tensors, all_results):
                    new = rows_for(tp, results)
                    rows.extend(new)
                    log.add(tp, results, new)
                    progress.tensor_done(tp.info.name)
        finally:
            progress.finish()
        bytes_read = opened.bytes_read() + sum(runner.meta().get("bytes_per_node", {}).values())
    runs = opened.runs
    meta = Meta(
        tool="dora-diag", version=_version(), base=os.fspath(base),
        runs=tuple(_run_info(r, opened.sources) for r in runs), axis=axis, device=runner.device_label,
        split_fused=split_fused, elapsed_s=round(time.perf_counter() - started, 3), bytes_read=bytes_read,
        tensors_compared=len(plan.tensors), skipped=tuple(plan.skipped), unmatched=tuple(plan.unmatched),
        warnings=tuple(base_hints(base) + [w for r in runs for w in r.warnings] + log.lines(plan)),
        executor=runner.meta())
    # Rows come out tensor by tensor (file order); present them checkpoint by checkpoint.
    position = {(ref.run, ref.name): i for i, (ref, _) in enumerate(opened.sources)}
    rows.sort(key=lambda r: position[(r["run"], r["checkpoint"])])
    return Analysis(build_table(rows, meta.methods), meta)


def _run_info(run, opened: list[tuple]) -> RunInfo:
    """A run's inputs: its checkpoints (kind and method each), the run's method with the
    evidence for it, and its training log."""
    sources = {id(ref): s for ref, s in opened}
    ckpts = tuple(_checkpoint_info(c, sources[id(c)]) for c in run.checkpoints)
    method, evidence = run_method(run.path, [c.method for c in ckpts])
    return RunInfo(run.label, run.path, method, evidence, ckpts, tuple(run.log))


def _checkpoint_info(ref, source) -> CheckpointInfo:
    return CheckpointInfo(ref.name, ref.step, ref.path, source.kind, source.method, tuple(source.magnitude_axes))


def _nothing_matched(base: str | os.PathLike, plan) -> str:
    non_float = sorted({s["reason"].split()[-1] for s in plan.skipped if s["reason"].startswith("non-float")})
    if non_float and not any(s["reason"] == "no fine-tuned counterpart" for s in plan.skipped):
        return (f"{os.fspath(base)}: no floating-point weight matrix to compare (non-float dtypes "
                f"{', '.join(non_float)}); packed quantized weights are not supported yet")
    n_unmatched = sum(u["side"] == "finetuned" for u in plan.unmatched)
    return (f"no tensor of {os.fspath(base)} matches the fine-tuned checkpoints "
            f"({n_unmatched} fine-tuned tensors unmatched); are they the same architecture?")


def _version() -> str:
    from .. import __version__

    return __version__
