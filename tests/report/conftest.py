"""Synthetic analyses for the report tests: built from a table, no checkpoint I/O."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dora_diag import Analysis
from dora_diag.analysis.table import build_table
from dora_diag.records import Meta

XSS = "<script>alert(1)</script>"
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SLOPES = {"FT": -0.6, "LoRA": 0.8, "DoRA": -0.3}


METHODS = {"FT": "ft", "LoRA": "lora", "DoRA": "dora"}


def synthetic_analysis(layers: int = 4, modules=MODULES[:2], steps=(100, 200, 300), runs=("FT", "LoRA"),
                       seed: int = 0, xss: bool = False, logs: bool = True, verdicts: bool = False) -> Analysis:
    g = np.random.default_rng(seed)
    rows, meta_runs = [], []
    for run in runs:
        names = [f"checkpoint-{s}" for s in steps[:-1]] + ["final"]
        for step, ckpt in zip(steps, names):
            for layer in range(layers):
                for module in modules:
                    dd = 1e-6 * step * (1 + 0.3 * g.standard_normal())
                    dm = 1e-3 * step * (1 + SLOPES.get(run, 0.5) * (dd / (1e-6 * step) - 1)) + 1e-5 * g.standard_normal()
                    rows.append(_row(run, step, ckpt, f"model.layers.{layer}.self_attn.{module}.weight", layer, module,
                                     abs(dm), abs(dd)))
                if xss:
                    rows.append(_row(run, step, ckpt, f"model.layers.{layer}.{XSS}.weight", layer, XSS,
                                     abs(dm) * 2, abs(dd) * 2))
            rows.append(_row(run, step, ckpt, "model.embed_tokens.weight", None, "embed_tokens", 1e-2, 1e-5))
            if xss:
                rows.append(_row(run, step, ckpt, XSS, None, XSS, 5e-2, 5e-5, flags="nonfinite"))
        log = [{"step": s, "loss": 2.0 / (1 + s / 100)} for s in range(10, steps[-1] + 1, 10)] if logs else []
        meta_runs.append({"label": run, "path": f"runs/{run}", "method": METHODS.get(run, "unknown"),
                          "checkpoints": [{"name": n, "step": s, "path": f"runs/{run}/{n}", "kind": "full"}
                                          for s, n in zip(steps, names)], "log": log})
    meta = {"tool": "dora-diag", "version": "test", "base": "base/" + (XSS if xss else ""), "runs": meta_runs,
            "axis": "out", "device": "cpu", "split_fused": False, "elapsed_s": 1.5, "bytes_read": 12345,
            "tensors_compared": layers * len(modules) + 1,
            "skipped": [{"tensor": XSS if xss else "model.norm.weight", "reason": "1-D"}],
            "unmatched": [{"run": runs[0], "checkpoint": "final", "tensor": "extra." + (XSS if xss else "x"),
                           "side": "finetuned"}]}
    a = Analysis(build_table(rows, {r["label"]: r["method"] for r in meta_runs}), Meta.from_json(meta))
    if verdicts:
        from dora_diag.analysis.verdict import verdict
        a = a.with_verdicts(verdict(a))
    return a


def with_log(a: Analysis, run: int, records: list[dict]) -> Analysis:
    """``a`` with ``records`` appended to the training log of its run number ``run``."""
    runs = list(a.meta.runs)
    runs[run] = replace(runs[run], log=runs[run].log + tuple(records))
    return a.with_meta(replace(a.meta, runs=tuple(runs)))


def _row(run, step, ckpt, tensor, layer, module, dm, dd, flags=""):
    return {"run": run, "step": step, "checkpoint": ckpt, "tensor": tensor, "layer": layer, "module": module,
            "group": "", "rows": 8, "cols": 8, "dtype": "F32", "delta_m": dm, "delta_d": dd,
            "rel_delta_m": dm / 3, "zero_rows": 0, "flags": flags}


@pytest.fixture
def small_analysis():
    return synthetic_analysis()


@pytest.fixture
def xss_analysis():
    return synthetic_analysis(xss=True, verdicts=True)
