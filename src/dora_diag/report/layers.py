"""Per-layer views of one checkpoint: profiles against layer index and layer × module heatmaps."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import (COLORSCALE, HEIGHT, METRICS, SCI, SHORT, choose, layer_dtick, module_types, names, palette,
                     pick_run_ckpt, sci_axes, txt)


def _layer_rows(analysis, run: str, checkpoint: str) -> pd.DataFrame:
    t = analysis.table
    rows = t[(t["run"] == run) & (t["checkpoint"] == checkpoint) & t["layer"].notna()]
    return rows.sort_values(["module", "layer"])


def profile(analysis, run: str | None = None, checkpoint: str | None = None) -> go.Figure:
    run, checkpoint = pick_run_ckpt(analysis, run, checkpoint)
    rows = _layer_rows(analysis, run, checkpoint)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[METRICS["delta_m"], METRICS["delta_d"]],
                        horizontal_spacing=0.1)
    for i, module in enumerate(m for m in module_types(analysis) if m in set(rows["module"])):
        g = rows[rows["module"] == module]
        for col, metric in ((1, "delta_m"), (2, "delta_d")):
            fig.add_trace(go.Scatter(
                x=g["layer"].to_numpy(int), y=g[metric].to_numpy(float), mode="lines+markers", name=txt(module),
                legendgroup=txt(module), showlegend=col == 1, customdata=names(g["tensor"]),
                hovertemplate="%{customdata}<br>layer %{x}: %{y:.3e}<extra></extra>",
                line={"color": palette(i)}), row=1, col=col)
    fig.update_layout(title={"text": f"Per-layer profile: {txt(run)}, {txt(checkpoint)}", "x": 0.01},
                      height=HEIGHT, template="plotly_white")
    fig.update_xaxes(title_text="layer", dtick=layer_dtick(rows))
    sci_axes(fig, x=False)
    return fig


def heatmap(analysis, metric: str = "delta_d", run: str | None = None, checkpoint: str | None = None) -> go.Figure:
    metric = choose(metric, list(METRICS), "metric")
    run, checkpoint = pick_run_ckpt(analysis, run, checkpoint)
    rows = _layer_rows(analysis, run, checkpoint)
    grid = rows.pivot_table(index="module", columns="layer", values=metric, aggfunc="mean", sort=False)
    grid = grid.reindex(index=[m for m in module_types(analysis) if m in grid.index])
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(float), x=[int(c) for c in grid.columns], y=[txt(m) for m in grid.index], colorscale=COLORSCALE,
        colorbar={"tickformat": SCI, "title": {"text": SHORT[metric]}},
        hovertemplate="%{y}, layer %{x}: %{z:.3e}<extra></extra>", hoverongaps=False))
    fig.update_layout(title={"text": f"{METRICS[metric]}, layer × module: {txt(run)}, {txt(checkpoint)}", "x": 0.01},
                      height=130 + 30 * max(len(grid.index), 3), margin={"t": 60, "b": 50},
                      template="plotly_white", xaxis={"title": {"text": "layer"}, "dtick": layer_dtick(rows)},
                      yaxis={"autorange": "reversed", "automargin": True})
    return fig
