"""What a comparison was run on, as typed records: built once by ``compare``, read by the
report, the CLI and the JSON.

Top-level and imports nothing of the package, so that ``analysis/`` (which builds them) and
``report/`` (which renders them) both import it without importing each other. Records are
frozen: ``check`` and the demo derive new ones (``dataclasses.replace``) instead of editing.
``to_json`` gives the JSON summary's fields exactly as written before these records existed;
``Meta.from_json`` reads them back (tests and notebooks build analyses from that form).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint of a run: how it was read (``kind``, e.g. "full", "lora", "dora") and the
    fine-tuning method it shows; ``magnitude_axes`` where its format lets DoRA's axis vary (LyCORIS)."""

    name: str
    step: int | None = None
    path: str = ""
    kind: str = ""
    method: str = "unknown"
    magnitude_axes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        out = {"name": self.name, "step": self.step, "path": self.path, "kind": self.kind, "method": self.method}
        if self.magnitude_axes:
            out["magnitude_axes"] = list(self.magnitude_axes)
        return out

    @classmethod
    def from_json(cls, doc: dict) -> CheckpointInfo:
        return _construct(cls, doc, magnitude_axes=tuple)


@dataclass(frozen=True)
class RunInfo:
    """One run: its label, path, method (``io.method``) with the evidence for it, its checkpoints
    in training order and its training log (records as the log gave them, each with "step")."""

    label: str
    path: str = ""
    method: str = "unknown"
    method_evidence: str = ""
    checkpoints: tuple[CheckpointInfo, ...] = ()
    log: tuple[dict, ...] = ()

    def to_json(self) -> dict:
        return {"label": self.label, "path": self.path, "method": self.method,
                "method_evidence": self.method_evidence, "checkpoints": [c.to_json() for c in self.checkpoints],
                "log": list(self.log)}

    @classmethod
    def from_json(cls, doc: dict) -> RunInfo:
        return _construct(cls, doc, checkpoints=lambda cs: tuple(CheckpointInfo.from_json(c) for c in cs), log=tuple)


@dataclass(frozen=True)
class Meta:
    """The inputs and circumstances of one comparison.

    ``skipped`` and ``unmatched`` are the plan's records (``analysis.plan.Plan``: {"tensor",
    "reason"[, "run", "checkpoint"]} and {"run", "checkpoint", "tensor", "side"}); ``executor``
    is the executor's own block (``Executor.meta()``: "kind" and, for Ray, its nodes and tasks).
    ``temporary_dirs``: paths deleted after the run (the demo's), which the report must not show.
    Optional numbers are None where a hand-built analysis did not record them.
    """

    base: str = ""
    runs: tuple[RunInfo, ...] = ()
    axis: str = "out"
    device: str | None = None
    split_fused: bool = False
    elapsed_s: float | None = None
    bytes_read: int | None = None
    tensors_compared: int | None = None
    skipped: tuple[dict, ...] = ()
    unmatched: tuple[dict, ...] = ()
    warnings: tuple[str, ...] = ()
    executor: dict = field(default_factory=lambda: {"kind": "local"})
    temporary_dirs: tuple[str, ...] = ()
    tool: str = "dora-diag"
    version: str = ""

    @property
    def labels(self) -> list[str]:
        """Run labels in the order the runs were given."""
        return [r.label for r in self.runs]

    @property
    def methods(self) -> dict[str, str]:
        """Run label -> fine-tuning method."""
        return {r.label: r.method for r in self.runs}

    def run(self, label: str) -> RunInfo | None:
        return next((r for r in self.runs if r.label == label), None)

    def with_temporary_dirs(self, *dirs: str) -> Meta:
        return replace(self, temporary_dirs=tuple(dirs))

    def to_json(self) -> dict:
        out = {"tool": self.tool, "version": self.version, "base": self.base, "runs": [r.to_json() for r in self.runs],
               "axis": self.axis, "device": self.device, "split_fused": self.split_fused, "elapsed_s": self.elapsed_s,
               "bytes_read": self.bytes_read, "tensors_compared": self.tensors_compared,
               "skipped": list(self.skipped), "unmatched": list(self.unmatched), "warnings": list(self.warnings),
               "executor": dict(self.executor)}
        if self.temporary_dirs:
            out["temporary_dirs"] = list(self.temporary_dirs)
        return out

    @classmethod
    def from_json(cls, doc: dict) -> Meta:
        """The record of a ``to_json`` dict; fields it lacks take their defaults."""
        return _construct(cls, doc, runs=lambda rs: tuple(RunInfo.from_json(r) for r in rs), skipped=tuple,
                          unmatched=tuple, warnings=tuple, temporary_dirs=tuple)


@dataclass(frozen=True)
class Verdict:
    """One run's "will DoRA help?" verdict (``analysis.verdict``).

    ``decision``: "dora_likely_helps", "marginal", "inconclusive" or "not_applicable" (runs that
    are not LoRA-family), ``decided_by``: "heuristic", "trial" or "none"; ``headline``, ``reason``
    and ``note`` say it in words. ``pooled`` holds the run's pooled statistics and ``modules`` one
    such dict per module type (with "module"), keyed as ``Analysis.stats`` columns;
    ``relative`` the paired comparisons with reference runs (``analysis.relative``); ``trial``
    the matched trial block, if one was run.
    """

    run: str
    method: str
    decision: str
    decided_by: str
    headline: str
    reason: str
    note: str
    statistic: str
    statistic_why: str
    thresholds: dict
    pooled: dict
    modules: tuple[dict, ...] = ()
    relative: tuple[dict, ...] = ()
    trial: dict | None = None
    ci_method: str | None = None
    p_method: str | None = None

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return out | {"thresholds": dict(self.thresholds), "modules": list(self.modules),
                      "relative": list(self.relative)}


@dataclass(frozen=True)
class VerifyInfo:
    """The inputs of one ``verify``: base, merged checkpoint, the adapter (None: none given) and
    how it was read, the tolerance, and the executor's block."""

    base: str
    merged: str
    adapter: str | None
    rtol: float
    adapter_kind: str | None
    executor: dict

    def to_json(self) -> dict:
        return {"tool": "dora-diag verify", "base": self.base, "merged": self.merged, "adapter": self.adapter,
                "rtol": self.rtol, "adapter_kind": self.adapter_kind, "executor": dict(self.executor)}


def _construct(cls, doc: dict, **convert):
    """``cls`` from the keys of ``doc`` that are its fields, each through ``convert[name]`` if given."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: convert.get(k, _same)(v) for k, v in doc.items() if k in names})


def _same(value):
    return value
