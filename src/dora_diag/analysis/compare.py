"""``compare()``: the library function behind ``dora-diag compare``."""

from __future__ import annotations

import os
import threading
import time
from contextlib import ExitStack, closing
from typing import Callable

import torch

from ..errors import InputError
from ..io.checkpoint import open_checkpoint
from ..io.method import run_method
from ..io.runs import expand_runs
from ..io.safetensors_file import STREAM_READAHEAD, RowReader
from ..io.sources import FineTunedSource, FullSource, open_source
from ..metrics.device import cpu_streams, intra_op_threads, resolve_device
from ..options import AXES, DEFAULT_BLOCK_BYTES
from .analysis import Analysis
from .plan import make_plan
from .stream import Streamer, run_all
from .table import build_table, rows_for
from .warnings import WarningLog

class Progress:
    """Callbacks for long work; the CLI plugs a progress bar in here."""

    def start(self, total_bytes: int, total_tensors: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def tensor_done(self, name: str) -> None: ...
    def finish(self) -> None: ...


def compare(base: str | os.PathLike, *finetuned: str | os.PathLike, axis: str = "out",
            device: str = "auto", split_fused: bool = False, block_bytes: int = DEFAULT_BLOCK_BYTES,
            progress: Progress | None = None, allow_partial: bool = False) -> Analysis:
    """Compare fine-tuned checkpoints with ``base`` tensor by tensor.

    Each ``finetuned`` item is ``[LABEL=]PATH``: a checkpoint directory or ``.safetensors`` file,
    a PEFT adapter, or a run directory of ``checkpoint-N/`` folders. ``axis="out"`` measures per
    output channel (the DoRA convention), ``"in"`` per input column (LyCORIS' default).
    On CPU several tensors stream at once (``metrics.device.cpu_streams``) and torch's
    intra-op thread count is divided among them until this returns. An adapter that changes
    tensors the base lacks is an ``InputError`` unless ``allow_partial``.
    """
    if axis not in AXES:
        raise InputError(f"axis must be 'out' or 'in', not {axis!r}")
    if not finetuned:
        raise InputError("give at least one fine-tuned checkpoint or run to compare with the base")
    progress = progress or Progress()
    dev = resolve_device(device)
    started = time.perf_counter()
    base_ckpt = open_checkpoint(base)
    runs = expand_runs(list(finetuned))
    with ExitStack() as stack:
        reader = stack.enter_context(RowReader(STREAM_READAHEAD))
        opened: list[tuple] = []
        for run in runs:
            for ref in run.checkpoints:
                source: FineTunedSource = open_source(ref.path, base_ckpt)
                stack.callback(source.close)
                opened.append((ref, source))
        plan = make_plan(base_ckpt, opened, split_fused=split_fused, allow_partial=allow_partial)
        if not plan.tensors:
            raise InputError(_nothing_matched(base, plan))
        # Adapter sources cache one tensor's factors at a time: their tensors go one by one.
        streams = cpu_streams(dev) if all(isinstance(s, FullSource) for _, s in opened) else 1
        advance = _serialized(progress.advance)
        streamers = [Streamer(reader, dev, axis, block_bytes, advance) for _ in range(streams)]
        total = sum(t.info.nbytes * (1 + sum(x.source.kind == "full" for x in t.targets)) for t in plan.tensors)
        if total > available_memory() // 2:
            # The page cache cannot keep this stream anyway: reading it through would evict
            # everything else first (and cost reclaim work, ~15% on a 28 GB pair in 24 GB).
            for r in [reader] + [s.reader for _, s in opened if isinstance(s, FullSource)]:
                r.drop_behind = True
        progress.start(total, len(plan.tensors))
        rows: list[dict] = []
        log = WarningLog()
        try:
            with intra_op_threads(torch.get_num_threads() // streams), \
                    closing(run_all(plan.tensors, streamers)) as all_results:
                for tp, results in zip(plan.tensors, all_results):
                    rows.extend(rows_for(tp, results))
                    log.add(tp, results)
                    progress.tensor_done(tp.info.name)
        finally:
            progress.finish()
        bytes_read = reader.bytes_read + sum(s.bytes_read() for _, s in opened)
    meta = {
        "tool": "dora-diag",
        "version": _version(),
        "base": os.fspath(base),
        "runs": [_run_meta(r, opened) for r in runs],
        "axis": axis,
        "device": str(dev) if dev.type == "cpu" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "split_fused": split_fused,
        "elapsed_s": round(time.perf_counter() - started, 3),
        "bytes_read": bytes_read,
        "tensors_compared": len(plan.tensors),
        "skipped": plan.skipped,
        "unmatched": plan.unmatched,
        "warnings": [w for r in runs for w in r.warnings] + log.lines(plan),
    }
    # Rows come out tensor by tensor (file order); present them checkpoint by checkpoint.
    position = {(ref.run, ref.name): i for i, (ref, _) in enumerate(opened)}
    rows.sort(key=lambda r: position[(r["run"], r["checkpoint"])])
    methods = {r["label"]: r["method"] for r in meta["runs"]}
    return Analysis(build_table(rows, methods), meta)


def _run_meta(run, opened: list[tuple]) -> dict:
    """A run's inputs as recorded in the JSON: its checkpoints (kind and method each), the
    run's method with the evidence for it, and its training log."""
    sources = {id(ref): s for ref, s in opened}
    ckpts = [{"name": c.name, "step": c.step, "path": c.path, "kind": sources[id(c)].kind,
              "method": sources[id(c)].method} for c in run.checkpoints]
    method, evidence = run_method(run.path, [c["method"] for c in ckpts])
    return {"label": run.label, "path": run.path, "method": method, "method_evidence": evidence,
            "checkpoints": ckpts, "log": list(run.log)}


def _serialized(fn: Callable[[int], None]) -> Callable[[int], None]:
    """``fn`` callable from several streaming threads (a progress bar is not thread-safe)."""
    lock = threading.Lock()

    def call(n: int) -> None:
        with lock:
            fn(n)
    return call


def available_memory() -> int:
    """MemAvailable from /proc/meminfo in bytes; unknown (not Linux) counts as unlimited."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


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
