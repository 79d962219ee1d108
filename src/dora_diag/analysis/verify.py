"""``verify()``: did a merge really change the weights, the way the adapter says it should?

With an adapter, each tensor it produces is computed from its factors by its own source (one row
block at a time, never the whole dense delta) and compared with the merged checkpoint; every
other tensor of the merged checkpoint must still equal the base. Without an adapter the only
question is whether the merged checkpoint differs from the base at all.

Per tensor, with B the base, E the expected weight, M the merged one (``verify_sums``):
``err = ‖M − E‖``, ``change = ‖E − B‖``, ``moved = ‖M − B‖`` (Frobenius, fp64), and
``noise = NOISE_ULPS · u · ‖E‖`` with u the unit roundoff of the coarser of M's and B's dtypes
(a bf16 merge is off by about half an ulp per element).

* ``ok``: ``err ≤ rtol·change + noise`` (without an adapter: ``changed`` or ``unchanged``);
* ``unchanged``: the adapter changes it but ``moved ≤ noise``: the merge left it at the base;
* ``mismatch``: anything else, with a diagnosis where one fits (a scaled change: alpha/r
  forgotten, rsLoRA confusion; per-channel rescaling: a DoRA magnitude dropped; transposed);
* ``missing``: expected but absent from the merged checkpoint; ``extra``: only in the merged one
  (leftover ``lora_A``/``lora_B`` tensors of a merge that did not happen, typically);
* ``skipped``: parts of the adapter its reader cannot apply (another LyCORIS algorithm, ...),
  listed with the reason, not verified and not counted as problems.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field

from ..architecture import match_names
from ..arrays import NUMPY, torch_ops
from ..io.checkpoint import Checkpoint, open_checkpoint
from ..io.safetensors_file import RowReader, TensorInfo
from ..io.sources import FineTunedSource, open_source
from ..options import DEFAULT_BLOCK_BYTES
from ..records import VerifyInfo
from ..runtime import exact_float32, tune_allocator
from .executors import make_executor
from .verify_sums import Agreement, diagnose, stream_sums, transposed_rows

NOISE_ULPS = 4
UNIT_ROUNDOFF = {"F64": 2.0 ** -53, "F32": 2.0 ** -24, "F16": 2.0 ** -11, "BF16": 2.0 ** -8,
                 "F8_E4M3": 2.0 ** -4, "F8_E5M2": 2.0 ** -3}
PROBLEMS = ("unchanged", "mismatch", "missing", "extra")
ZERO_UPDATE = "the adapter's update of it is zero"


@dataclass
class Verification:
    """Per-tensor records (``tensor``, ``status``, ``detail``, ``rel_deviation`` = err / change)
    and the inputs; ``problems`` has one line per thing that is off, ``ok`` is True when none is."""

    records: list[dict]
    meta: VerifyInfo
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    def to_dict(self) -> dict:
        return {**self.meta.to_json(), "ok": self.ok, "counts": self.counts(), "problems": self.problems,
                "tensors": self.records}

    def to_json(self, path: str | os.PathLike) -> None:
        from ..outputs.atomic import write_atomic
        from ..outputs.tabular import dump_json

        write_atomic(path, dump_json(self.to_dict()))


@dataclass
class _Inputs:
    reader: RowReader
    source: FineTunedSource | None
    rtol: float
    block_bytes: int

    @property
    def ops(self):
        """numpy arrays (no torch to import), or torch tensors where an adapter computes with them."""
        return NUMPY if self.source is None else torch_ops()

    def rows(self, info: TensorInfo):
        """``(start, stop) -> rows start:stop`` of ``info``, as ``ops``' arrays."""
        return lambda start, stop: self.reader.read_rows(info, start, stop, ops=self.ops)


@dataclass(frozen=True)
class VerifyJob:
    """``verify``'s arguments (paths as given): what a Ray worker opens again."""

    base: str
    merged: str
    adapter: str | None
    rtol: float
    block_bytes: int


@dataclass
class _Opened:
    base: Checkpoint
    merged: Checkpoint
    to_merged: dict[str, str]
    inputs: _Inputs
    expected: dict[str, TensorInfo]   # tensors the adapter produces
    skipped: dict[str, str]           # adapter parts its reader cannot apply: tensor -> reason


def open_verify(job: VerifyJob, stack: ExitStack) -> _Opened:
    tune_allocator()
    stack.enter_context(exact_float32())   # the merge is recomputed with torch matmuls
    base_ckpt, merged_ckpt = open_checkpoint(job.base), open_checkpoint(job.merged)
    to_merged = match_names(list(base_ckpt.tensors), list(merged_ckpt.tensors))
    source = None if job.adapter is None else open_source(job.adapter, base_ckpt)
    if source is not None:
        stack.callback(source.close)
    inputs = _Inputs(stack.enter_context(RowReader()), source, job.rtol, job.block_bytes)
    return _Opened(base_ckpt, merged_ckpt, to_merged, inputs, source.infos() if source else {},
                   {s["tensor"]: s["reason"] for s in (source.skipped if source else ())})


def check_tensor(o: _Opened, name: str) -> dict:
    """The record of base tensor ``name`` (a Ray task's unit of work)."""
    merged = o.merged.tensors.get(o.to_merged.get(name, ""))
    return _check(name, o.base.tensors[name], merged, name in o.expected, o.inputs)


def verify(base: str | os.PathLike, merged: str | os.PathLike, adapter: str | os.PathLike | None = None,
           rtol: float = 1e-3, block_bytes: int = DEFAULT_BLOCK_BYTES, executor: str = "local",
           ray_address: str | None = None) -> Verification:
    """Check the checkpoint ``merged`` against ``base`` and, when given, the ``adapter`` it should
    contain (PEFT, diffusers or LyCORIS/kohya; or any fine-tuned checkpoint it should equal).
    ``executor="ray"`` checks the tensors as tasks on the Ray cluster at ``ray_address``
    (``RAY_ADDRESS`` when None), one per tensor; the records are the same."""
    runner = make_executor(executor, ray_address)
    job = VerifyJob(os.fspath(base), os.fspath(merged), None if adapter is None else os.fspath(adapter), rtol,
                    block_bytes)
    with ExitStack() as stack:
        o = open_verify(job, stack)
        base_ckpt, merged_ckpt, source, expected, skipped = o.base, o.merged, o.inputs.source, o.expected, o.skipped
        to_merged = o.to_merged
        names = [name for name, info in sorted(base_ckpt.tensors.items()) if _comparable(info) and name not in skipped]
        records = runner.map(job, names, open_verify, check_tensor, o)
    records += [_record(n, "skipped", f"not verified: {why}", adapted=True) for n, why in sorted(skipped.items())]
    records += [_record(n, "missing", "the adapter changes it but the base has no such tensor", adapted=True)
                for n in sorted(expected) if n not in base_ckpt.tensors]
    used = set(to_merged.values())
    records += [_record(n, "extra", "only in the merged checkpoint")
                for n in sorted(merged_ckpt.tensors) if n not in used]
    meta = VerifyInfo(os.fspath(base), os.fspath(merged), None if adapter is None else os.fspath(adapter), rtol,
                      source.kind if source else None, runner.meta())
    return Verification(records, meta, _problems(records, source is not None))


def _comparable(info: TensorInfo) -> bool:
    return info.is_float and len(info.shape) >= 1 and 0 not in info.shape


def _record(name: str, status: str, detail: str = "", rel_deviation: float | None = None,
            adapted: bool = False) -> dict:
    return {"tensor": name, "status": status, "detail": detail, "rel_deviation": rel_deviation, "adapted": adapted}


def _check(name: str, base: TensorInfo, merged: TensorInfo | None, adapted: bool, inputs: _Inputs) -> dict:
    """The record of one base tensor; ``adapted``: the adapter produces it."""
    if merged is None:
        return _record(name, "missing", "not in the merged checkpoint", adapted=adapted)
    source = inputs.source if adapted else None
    if merged.shape != base.shape:
        return {**_shape_mismatch(name, base, merged, source, inputs), "adapted": adapted}
    a = _agreement(name, base, merged, source, inputs, inputs.rows(merged))
    if not a.finite:
        return _record(name, "mismatch", "NaN or Inf values (in the merged or the base tensor)", adapted=adapted)
    if inputs.source is None:
        return _record(name, "unchanged" if a.ok else "changed")
    if not adapted:
        return _record(name, "ok") if a.ok else _record(name, "mismatch", "changed although the adapter does not touch it")
    return _adapted_record(name, base, merged, a, inputs)


def _adapted_record(name: str, base: TensorInfo, merged: TensorInfo, a: Agreement, inputs: _Inputs) -> dict:
    """The record of a tensor the adapter produces, from its agreement ``a`` with the merge."""
    if a.ok:
        return _record(name, "ok", "" if a.change > 0 else ZERO_UPDATE, a.rel_deviation, True)
    if a.unchanged:
        return _record(name, "unchanged", "equals the base although the adapter changes it: dropped in the merge",
                       a.rel_deviation, True)
    source = inputs.source
    a = _agreement(name, base, merged, source, inputs, inputs.rows(merged), True)
    detail = diagnose(a, source.rank_and_scale(name), source.kind)
    square = len(base.shape) == 2 and base.shape[0] == base.shape[1]
    if detail is None and square and _transposed(name, base, merged, source, inputs):
        detail = "stored transposed"
    fallback = f"differs from the adapter's weight by {a.rel_deviation:.3g} of its change"
    return _record(name, "mismatch", detail or fallback, a.rel_deviation, True)


def _agreement(name: str, base: TensorInfo, merged: TensorInfo, source: FineTunedSource | None,
               inputs: _Inputs, merged_rows, per_channel: bool = False) -> Agreement:
    """The sums of one pass; ``per_channel`` (a second pass, for mismatches) adds what ``diagnose`` needs."""
    def expected(b, start, stop):
        return b if source is None else source.rows(name, b, start, stop)

    sums = stream_sums(base, inputs.rows(base), merged_rows, expected,
                       inputs.block_bytes, per_channel)
    noise = NOISE_ULPS * max(UNIT_ROUNDOFF[merged.dtype], UNIT_ROUNDOFF[base.dtype])
    return Agreement(sums, noise, inputs.rtol)


def _transposed(name: str, base: TensorInfo, merged: TensorInfo, source: FineTunedSource | None,
                inputs: _Inputs) -> bool:
    """Whether Mᵀ agrees with E (reads the merged tensor whole, once)."""
    rows = transposed_rows(merged, inputs.reader.read_all(merged, inputs.ops))
    return _agreement(name, base, merged, source, inputs, rows).ok


def _shape_mismatch(name: str, base: TensorInfo, merged: TensorInfo, source, inputs: _Inputs) -> dict:
    if len(base.shape) == 2 and merged.shape == base.shape[::-1] and _transposed(name, base, merged, source, inputs):
        return _record(name, "mismatch", f"stored transposed: {list(merged.shape)} for {list(base.shape)}")
    return _record(name, "mismatch", f"shape {list(merged.shape)}, base {list(base.shape)}")


def _problems(records: list[dict], with_adapter: bool) -> list[str]:
    """One line per problem record; without an adapter a tensor left unchanged is no problem by
    itself, only a checkpoint in which nothing changed is."""
    per_tensor = PROBLEMS if with_adapter else tuple(p for p in PROBLEMS if p != "unchanged")
    lines = [f"{r['status']}: {r['tensor']}: {r['detail']}" for r in records if r["status"] in per_tensor]
    compared = [r for r in records if r["status"] in ("changed", "unchanged")]
    if not with_adapter and compared and all(r["status"] == "unchanged" for r in compared):
        lines.insert(0, f"the merged checkpoint equals the base in all {len(compared)} tensors: nothing was merged")
    adapted = [r for r in records if r["adapted"] and r["status"] not in ("missing", "skipped")]
    if adapted and all(r["detail"] == ZERO_UPDATE for r in adapted):
        lines.insert(0, "the adapter changes no tensor: every update is zero")
    return lines
