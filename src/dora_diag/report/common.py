"""What every report figure shares: choices with helpful errors, checkpoint order, display text."""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

METRICS = {"delta_d": "ΔD (mean 1 − cos)", "delta_m": "ΔM (mean |Δ‖w‖|)"}
SHORT = {"delta_d": "ΔD", "delta_m": "ΔM"}
SCI = ".2e"   # ΔD is often 1e-6: plain ticks would read 0, 0, 0
COLORSCALE = "Viridis"
HEIGHT = 380


def txt(value) -> str:
    """Plotly renders a subset of HTML in every text; names from checkpoints must show literally."""
    return html.escape(str(value), quote=False)


def names(series: pd.Series) -> np.ndarray:
    return np.array([txt(v) for v in series], dtype=object)


def choose(value, choices: list, what: str):
    if value is None:
        if not choices:
            raise ValueError(f"the analysis has no {what}")
        return choices[0]
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {choices}")
    return value


# Display order: attention before MLP, as in a transformer block; other names follow alphabetically.
MODULE_ORDER = ("q_proj", "query", "q", "k_proj", "key", "k", "v_proj", "value", "v", "c_attn", "qkv_proj",
                "Wqkv", "query_key_value", "o_proj", "out_proj", "dense", "c_proj", "gate_proj", "w1", "up_proj",
                "w3", "fc1", "c_fc", "dense_h_to_4h", "down_proj", "w2", "fc2", "dense_4h_to_h")


def module_types(analysis) -> list[str]:
    """Module types with at least one layer tensor, in ``MODULE_ORDER`` of their first known dotted part
    (fused groups "c_attn.q" right after "c_attn"), unknown ones last."""
    pts = analysis.table[analysis.table["layer"].notna()]
    rank = {m: i for i, m in enumerate(MODULE_ORDER)}

    def key(module: str) -> tuple:
        return min((rank[part] for part in module.split(".") if part in rank), default=len(rank)), module

    return sorted(dict.fromkeys(pts["module"]), key=key)


def checkpoints(analysis, run: str) -> list[str]:
    """Checkpoint names of ``run`` in training order."""
    for r in analysis.meta.get("runs", []):
        if r["label"] == run:
            return [c["name"] for c in r.get("checkpoints", [])]
    return list(dict.fromkeys(analysis.table.loc[analysis.table["run"] == run, "checkpoint"]))


def run_labels(analysis) -> list[str]:
    return analysis.runs or list(dict.fromkeys(analysis.table["run"]))


def with_order(analysis, table: pd.DataFrame) -> pd.DataFrame:
    """Adds ``order`` (checkpoint index in its run) and ``when``: the step when every row has one,
    else the checkpoint index for all rows (steps and indices on one axis would mislead)."""
    order = {(run, name): i for run in run_labels(analysis) for i, name in enumerate(checkpoints(analysis, run))}
    out = table.assign(order=[order.get(k, 0) for k in zip(table["run"], table["checkpoint"])])
    return out.assign(when=(out["step"] if steps_known(out) else out["order"]).astype(float))


def steps_known(table: pd.DataFrame) -> bool:
    return bool(table["step"].notna().all()) and len(table) > 0


def pick_run_ckpt(analysis, run, checkpoint) -> tuple[str, str]:
    run = choose(run, run_labels(analysis), "run")
    return run, choose(checkpoint, checkpoints(analysis, run)[::-1], "checkpoint")


def sci_axes(fig: go.Figure, x: bool = True, y: bool = True) -> None:
    if x:
        fig.update_xaxes(tickformat=SCI, exponentformat="e")
    if y:
        fig.update_yaxes(tickformat=SCI, exponentformat="e")


def layer_dtick(rows: pd.DataFrame) -> int:
    n = int(rows["layer"].max()) + 1 if len(rows) else 1
    return max(1, math.ceil(n / 16))


def palette(i: int) -> str:
    colors = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#7f7f7f", "#bcbd22", "#17becf")
    return colors[i % len(colors)]



def training_logs(analysis) -> dict[str, pd.DataFrame]:
    """Per run with a non-empty training log, its records as a frame sorted by step."""
    out = {}
    for r in analysis.meta.get("runs", []):
        log = [rec for rec in r.get("log") or [] if isinstance(rec, dict)]
        if log:
            out[r["label"]] = pd.DataFrame.from_records(log).sort_values("step")
    return out
