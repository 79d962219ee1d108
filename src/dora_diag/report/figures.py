"""Plotly figures of an analysis; ``Analysis.figure(kind, ...)`` and the HTML report use these.

Kinds (``FIGURES``):

- ``"scatter"``    the DoRA paper's Figure 2 for one module type: x = ΔD, y = ΔM, one point per
  (layer, checkpoint), colour = step, OLS line, r / slope / p / 95% CI in the panel title.
  Runs sit side by side with shared axes. ``module=`` (default: the first module type),
  ``runs=`` (default: all).
- ``"profile"``    ΔM and ΔD against layer index, one line per module type. ``run=``,
  ``checkpoint=`` (default: the first run, its last checkpoint).
- ``"heatmap"``    layer × module of ``metric="delta_d"`` or ``"delta_m"``; ``run=``, ``checkpoint=``.
- ``"trajectory"`` mean ΔM and ΔD over layers against training step, per run and module type.
- ``"training"``   loss curves (and eval metrics) from the runs' training logs.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis.stats import fit_points
from .format import ci_text, fmt, fmt_p

METRICS = {"delta_d": "ΔD (mean 1 − cos)", "delta_m": "ΔM (mean |Δ‖w‖|)"}
SHORT = {"delta_d": "ΔD", "delta_m": "ΔM"}
SCI = ".2e"   # ΔD is often 1e-6: plain ticks would read 0, 0, 0
COLORSCALE = "Viridis"
HEIGHT = 380


def make_figure(analysis, kind: str, **kwargs) -> go.Figure:
    if kind not in FIGURES:
        raise ValueError(f"unknown figure kind {kind!r}; choose one of {sorted(FIGURES)}")
    return FIGURES[kind](analysis, **kwargs)


def txt(value) -> str:
    """Plotly renders a subset of HTML in every text; names from checkpoints must show literally."""
    return html.escape(str(value), quote=False)


def _names(series: pd.Series) -> np.ndarray:
    return np.array([txt(v) for v in series], dtype=object)


# ---- choices and shared data --------------------------------------------------------------------
def _choose(value, choices: list, what: str):
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
    return out.assign(when=(out["step"] if _steps_known(out) else out["order"]).astype(float))


def _steps_known(table: pd.DataFrame) -> bool:
    return bool(table["step"].notna().all()) and len(table) > 0


def _pick_run_ckpt(analysis, run, checkpoint) -> tuple[str, str]:
    run = _choose(run, run_labels(analysis), "run")
    return run, _choose(checkpoint, checkpoints(analysis, run)[::-1], "checkpoint")


def _sci_axes(fig: go.Figure, x: bool = True, y: bool = True) -> None:
    if x:
        fig.update_xaxes(tickformat=SCI, exponentformat="e")
    if y:
        fig.update_yaxes(tickformat=SCI, exponentformat="e")


# ---- Figure 2 --------------------------------------------------------------------------------
def scatter(analysis, module: str | None = None, runs: list[str] | None = None) -> go.Figure:
    module = _choose(module, module_types(analysis), "module")
    all_runs = run_labels(analysis)
    runs = list(runs) if runs is not None else all_runs
    for r in runs:
        _choose(r, all_runs, "run")
    pts = with_order(analysis, fit_points(analysis.table[analysis.table["module"] == module]))
    stats = analysis.stats("module")
    titles = [_panel_title(r, stats[(stats["run"] == r) & (stats["module"] == module)]) for r in runs]
    fig = make_subplots(rows=1, cols=max(len(runs), 1), shared_xaxes="all", shared_yaxes="all",
                        subplot_titles=titles, horizontal_spacing=0.04)
    known = _steps_known(pts)
    for col, run in enumerate(runs, start=1):
        p = pts[pts["run"] == run]
        fig.add_trace(go.Scatter(
            x=p["delta_d"].to_numpy(float), y=p["delta_m"].to_numpy(float), mode="markers", name=txt(run),
            marker={"color": p["when"].to_numpy(float), "coloraxis": "coloraxis", "size": 8,
                    "line": {"width": 0.5, "color": "#333"}},
            customdata=np.stack([_names(p["tensor"]), _names(p["checkpoint"]), p["layer"].astype(str),
                                 _names(p["run"])], axis=-1) if len(p) else None,
            hovertemplate=("%{customdata[0]}<br>%{customdata[1]}, layer %{customdata[2]}"
                           "<br>ΔD=%{x:.3e}<br>ΔM=%{y:.3e}<extra>%{customdata[3]}</extra>"),
            showlegend=False), row=1, col=col)
        line = _ols_line(p, stats[(stats["run"] == run) & (stats["module"] == module)])
        if line is not None:
            fig.add_trace(go.Scatter(x=line[0], y=line[1], mode="lines", line={"color": "#d62728", "width": 2},
                                     name="OLS", hoverinfo="skip", showlegend=False), row=1, col=col)
    fig.update_layout(
        title={"text": f"{txt(module)}: ΔM against ΔD (DoRA paper, Figure 2)", "x": 0.01},
        coloraxis={"colorscale": COLORSCALE, "colorbar": {"title": {"text": "step" if known else "checkpoint #"}}},
        height=HEIGHT + 40, margin={"t": 110}, template="plotly_white")
    fig.update_annotations(font_size=11)
    fig.update_xaxes(title_text=METRICS["delta_d"])
    fig.update_yaxes(title_text=METRICS["delta_m"], col=1)
    _sci_axes(fig)
    return fig


def _panel_title(run: str, row: pd.DataFrame) -> str:
    if row.empty:
        return f"{txt(run)}: no points"
    s = row.iloc[0]
    return (f"{txt(run)}: r = {fmt(s['pearson_r'], '+.2f')}{ci_text(s)}<br>"
            f"slope = {fmt(s['slope'], '.3g')}, p = {fmt_p(s['p_value'])}, n = {int(s['n'])}")


def _ols_line(p: pd.DataFrame, row: pd.DataFrame):
    if row.empty or p.empty or not math.isfinite(row.iloc[0]["slope"]):
        return None
    x = np.array([p["delta_d"].min(), p["delta_d"].max()], dtype=float)
    return x, row.iloc[0]["intercept"] + row.iloc[0]["slope"] * x


# ---- per-layer views ----------------------------------------------------------------------------
def _layer_rows(analysis, run: str, checkpoint: str) -> pd.DataFrame:
    t = analysis.table
    rows = t[(t["run"] == run) & (t["checkpoint"] == checkpoint) & t["layer"].notna()]
    return rows.sort_values(["module", "layer"])


def profile(analysis, run: str | None = None, checkpoint: str | None = None) -> go.Figure:
    run, checkpoint = _pick_run_ckpt(analysis, run, checkpoint)
    rows = _layer_rows(analysis, run, checkpoint)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[METRICS["delta_m"], METRICS["delta_d"]],
                        horizontal_spacing=0.1)
    for i, module in enumerate(m for m in module_types(analysis) if m in set(rows["module"])):
        g = rows[rows["module"] == module]
        for col, metric in ((1, "delta_m"), (2, "delta_d")):
            fig.add_trace(go.Scatter(
                x=g["layer"].to_numpy(int), y=g[metric].to_numpy(float), mode="lines+markers", name=txt(module),
                legendgroup=txt(module), showlegend=col == 1, customdata=_names(g["tensor"]),
                hovertemplate="%{customdata}<br>layer %{x}: %{y:.3e}<extra></extra>",
                line={"color": _palette(i)}), row=1, col=col)
    fig.update_layout(title={"text": f"Per-layer profile: {txt(run)}, {txt(checkpoint)}", "x": 0.01},
                      height=HEIGHT, template="plotly_white")
    fig.update_xaxes(title_text="layer", dtick=_layer_dtick(rows))
    _sci_axes(fig, x=False)
    return fig


def heatmap(analysis, metric: str = "delta_d", run: str | None = None, checkpoint: str | None = None) -> go.Figure:
    metric = _choose(metric, list(METRICS), "metric")
    run, checkpoint = _pick_run_ckpt(analysis, run, checkpoint)
    rows = _layer_rows(analysis, run, checkpoint)
    grid = rows.pivot_table(index="module", columns="layer", values=metric, aggfunc="mean", sort=False)
    grid = grid.reindex(index=[m for m in module_types(analysis) if m in grid.index])
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(float), x=[int(c) for c in grid.columns], y=[txt(m) for m in grid.index], colorscale=COLORSCALE,
        colorbar={"tickformat": SCI, "title": {"text": SHORT[metric]}},
        hovertemplate="%{y}, layer %{x}: %{z:.3e}<extra></extra>", hoverongaps=False))
    fig.update_layout(title={"text": f"{METRICS[metric]}, layer × module: {txt(run)}, {txt(checkpoint)}", "x": 0.01},
                      height=130 + 30 * max(len(grid.index), 3), margin={"t": 60, "b": 50},
                      template="plotly_white",
                      xaxis={"title": {"text": "layer"}, "dtick": _layer_dtick(rows)}, yaxis={"autorange": "reversed", "automargin": True})
    return fig


def _layer_dtick(rows: pd.DataFrame) -> int:
    n = int(rows["layer"].max()) + 1 if len(rows) else 1
    return max(1, math.ceil(n / 16))


def _palette(i: int) -> str:
    colors = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#7f7f7f", "#bcbd22", "#17becf")
    return colors[i % len(colors)]


# ---- across checkpoints -------------------------------------------------------------------------
def trajectory(analysis, runs: list[str] | None = None) -> go.Figure:
    runs = list(runs) if runs is not None else run_labels(analysis)
    pts = with_order(analysis, fit_points(analysis.table[analysis.table["run"].isin(runs)]))
    means = (pts.groupby(["run", "module", "order", "checkpoint"], sort=False)
             .agg(when=("when", "first"), delta_m=("delta_m", "mean"), delta_d=("delta_d", "mean"))
             .reset_index().sort_values(["run", "order"]))
    known = _steps_known(pts)
    fig = make_subplots(rows=1, cols=2, subplot_titles=["mean ΔM over layers", "mean ΔD over layers"],
                        horizontal_spacing=0.1)
    dashes = ("solid", "dash", "dot", "dashdot", "longdash")
    modules = module_types(analysis)
    for ri, run in enumerate(runs):
        for module, g in means[means["run"] == run].groupby("module", sort=False):
            name = txt(f"{run} · {module}" if len(runs) > 1 else module)
            for col, metric in ((1, "delta_m"), (2, "delta_d")):
                fig.add_trace(go.Scatter(
                    x=g["when"].to_numpy(float), y=g[metric].to_numpy(float), mode="lines+markers", name=name,
                    legendgroup=name, showlegend=col == 1, customdata=_names(g["checkpoint"]),
                    hovertemplate="%{customdata}: %{y:.3e}<extra>%{fullData.name}</extra>",
                    line={"color": _palette(modules.index(module)), "dash": dashes[ri % len(dashes)]}),
                    row=1, col=col)
    fig.update_layout(title={"text": "Trajectories across checkpoints", "x": 0.01}, height=HEIGHT,
                      template="plotly_white")
    fig.update_xaxes(title_text="step" if known else "checkpoint #")
    _sci_axes(fig, x=False)
    return fig


def training_logs(analysis) -> dict[str, pd.DataFrame]:
    """Per run with a non-empty training log, its records as a frame sorted by step."""
    out = {}
    for r in analysis.meta.get("runs", []):
        log = [rec for rec in r.get("log") or [] if isinstance(rec, dict)]
        if log:
            out[r["label"]] = pd.DataFrame.from_records(log).sort_values("step")
    return out


# HF Trainer logs speed next to the eval metrics; those are not learning curves.
NOT_CURVES = ("_runtime", "_per_second")


def training(analysis, runs: list[str] | None = None) -> go.Figure:
    logs = training_logs(analysis)
    if not logs:
        raise ValueError("no run has a training log (metrics.jsonl or trainer_state.json log_history)")
    runs = [r for r in (runs if runs is not None else logs) if r in logs]
    fig = go.Figure()
    for ri, run in enumerate(runs):
        df = logs[run]
        series = [c for c in df.columns if (c == "loss" or c.startswith("eval_")) and not c.endswith(NOT_CURVES)
                  and pd.api.types.is_numeric_dtype(df[c])]
        for c in series:
            s = df[["step", c]].dropna()
            fig.add_trace(go.Scatter(x=s["step"].to_numpy(float), y=s[c].to_numpy(float), mode="lines+markers",
                                     name=txt(f"{run} · {c}" if len(runs) > 1 else c),
                                     line={"color": _palette(ri), "dash": "solid" if c == "loss" else "dash"},
                                     marker={"size": 4}))
    fig.update_layout(title={"text": "Training log", "x": 0.01}, height=HEIGHT, template="plotly_white",
                      xaxis={"title": {"text": "step"}}, yaxis={"title": {"text": "value"}})
    return fig


FIGURES = {"scatter": scatter, "profile": profile, "heatmap": heatmap, "trajectory": trajectory,
           "training": training}
