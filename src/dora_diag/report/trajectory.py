"""Views across checkpoints: ΔM/ΔD trajectories and the training log's learning curves."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis.stats import fit_points
from .common import (HEIGHT, module_types, names, palette, run_labels, sci_axes, steps_known, training_logs, txt,
                     with_order)


def trajectory(analysis, runs: list[str] | None = None) -> go.Figure:
    runs = list(runs) if runs is not None else run_labels(analysis)
    pts = with_order(analysis, fit_points(analysis.table[analysis.table["run"].isin(runs)]))
    means = (pts.groupby(["run", "module", "order", "checkpoint"], sort=False)
             .agg(when=("when", "first"), delta_m=("delta_m", "mean"), delta_d=("delta_d", "mean"))
             .reset_index().sort_values(["run", "order"]))
    known = steps_known(pts)
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
                    legendgroup=name, showlegend=col == 1, customdata=names(g["checkpoint"]),
                    hovertemplate="%{customdata}: %{y:.3e}<extra>%{fullData.name}</extra>",
                    line={"color": palette(modules.index(module)), "dash": dashes[ri % len(dashes)]}),
                    row=1, col=col)
    fig.update_layout(title={"text": "Trajectories across checkpoints", "x": 0.01}, height=HEIGHT,
                      template="plotly_white")
    fig.update_xaxes(title_text="step" if known else "checkpoint #")
    sci_axes(fig, x=False)
    return fig



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
                                     line={"color": palette(ri), "dash": "solid" if c == "loss" else "dash"},
                                     marker={"size": 4}))
    fig.update_layout(title={"text": "Training log", "x": 0.01}, height=HEIGHT, template="plotly_white",
                      xaxis={"title": {"text": "step"}}, yaxis={"title": {"text": "value"}})
    return fig
