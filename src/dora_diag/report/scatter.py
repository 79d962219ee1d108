"""The DoRA paper's Figure 2 for one module type: ΔM against ΔD, runs side by side."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis.stats import fit_points
from .common import (COLORSCALE, HEIGHT, METRICS, choose, module_types, names, run_labels, sci_axes,
                     steps_known, txt, with_order)
from .format import ci_text, fmt, fmt_p


def scatter(analysis, module: str | None = None, runs: list[str] | None = None) -> go.Figure:
    module = choose(module, module_types(analysis), "module")
    all_runs = run_labels(analysis)
    runs = list(runs) if runs is not None else all_runs
    for r in runs:
        choose(r, all_runs, "run")
    pts = with_order(analysis, fit_points(analysis.table[analysis.table["module"] == module]))
    stats = analysis.stats("module")
    titles = [_panel_title(r, stats[(stats["run"] == r) & (stats["module"] == module)]) for r in runs]
    fig = make_subplots(rows=1, cols=max(len(runs), 1), shared_xaxes="all", shared_yaxes="all",
                        subplot_titles=titles, horizontal_spacing=0.04)
    known = steps_known(pts)
    for col, run in enumerate(runs, start=1):
        p = pts[pts["run"] == run]
        fig.add_trace(go.Scatter(
            x=p["delta_d"].to_numpy(float), y=p["delta_m"].to_numpy(float), mode="markers", name=txt(run),
            marker={"color": p["when"].to_numpy(float), "coloraxis": "coloraxis", "size": 8,
                    "line": {"width": 0.5, "color": "#333"}},
            customdata=np.stack([names(p["tensor"]), names(p["checkpoint"]), p["layer"].astype(str),
                                 names(p["run"])], axis=-1) if len(p) else None,
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
    sci_axes(fig)
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
