"""Per-channel changes -> one table row per tensor (and per fused group) per checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..metrics.kernels import ChannelChanges
from .plan import TensorPlan
from .stream import TargetResult

COLUMNS = ["run", "method", "step", "checkpoint", "tensor", "stack", "layer", "module", "expert", "group", "rows",
           "cols", "dtype",
           "delta_m", "delta_d", "rel_delta_m", "zero_rows", "flags"]
ZERO_CHANGE = "zero change"   # flag of an adapted tensor the adapter leaves exactly at the base


def summarize(ch: ChannelChanges, index: slice | list[int] | None = None) -> dict:
    """Means over finite channels: ΔM = mean |Δm|, ΔD = mean (1 - cos) over channels with a
    direction, rel ΔM = mean |Δm| / m_base over channels with m_base > 0. Channels with NaN/Inf
    are left out (the row is flagged "nonfinite")."""
    sel = (lambda x: x) if index is None else (lambda x: x[index])  # noqa: E731
    finite = ~sel(ch.nonfinite)
    dm, dd, m0, zero = np.abs(sel(ch.dm))[finite], sel(ch.dd)[finite], sel(ch.m0)[finite], sel(ch.zero)[finite]
    live = ~zero
    return {
        "delta_m": _mean(dm),
        "delta_d": _mean(dd[live]),
        "rel_delta_m": _mean(dm[m0 > 0] / m0[m0 > 0]),
        "zero_rows": int(zero.sum()),
    }


def is_zero_change(target, stats: dict) -> bool:
    """An adapter (rows computed from the base, not stored) that leaves this tensor exactly as
    the base: B = 0, or a DoRA magnitude equal to the base norm. Identical rows give ΔM = ΔD = 0
    exactly in the kernel (d = 0), so the measured values decide, whatever the format."""
    return not target.source.stored and stats["delta_m"] == 0 and stats["delta_d"] == 0


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else math.nan


def rows_for(plan: TensorPlan, results: list[TargetResult]) -> list[dict]:
    rows = []
    for r in results:
        t = r.target
        groups = [("", None)] + (list(plan.groups) if plan.groups else [])
        for group, index in groups:
            stats = summarize(r.changes, index)
            flags = list(t.flags)
            if r.nonfinite:
                flags.append("nonfinite")
            elif math.isnan(stats["delta_d"]):
                flags.append("all channels zero")
            elif is_zero_change(t, stats):
                flags.append(ZERO_CHANGE)
            rows.append({
                "run": t.ref.run, "step": t.ref.step, "checkpoint": t.ref.name, "tensor": plan.info.name,
                "stack": plan.stack, "layer": plan.layer,
                "module": f"{plan.module}.{group}" if group else plan.module, "expert": plan.expert, "group": group,
                "rows": plan.out_features if not group else _count(index), "cols": plan.in_features,
                "dtype": plan.info.dtype, **stats, "flags": ";".join(flags),
            })
    return rows


def _count(index: slice | list[int]) -> int:
    return index.stop - index.start if isinstance(index, slice) else len(index)


def build_table(rows: list[dict], methods: dict[str, str] | None = None) -> pd.DataFrame:
    """The table is built once from all rows, never grown per tensor; ``methods`` gives each
    run's fine-tuning method (``io.method``; "unknown" where absent)."""
    df = pd.DataFrame.from_records(rows, columns=[c for c in COLUMNS if c != "method"])
    df.insert(1, "method", pd.Series([(methods or {}).get(r, "unknown") for r in df["run"]], index=df.index,
                                     dtype=object))
    df["step"] = df["step"].astype("Int64")
    df["layer"] = df["layer"].astype("Int64")
    df["expert"] = df["expert"].astype("Int64")
    for col in ("rows", "cols", "zero_rows"):
        df[col] = df[col].astype("int64")
    for col in ("delta_m", "delta_d", "rel_delta_m"):
        df[col] = df[col].astype("float64")
    return df
