"""Per-layer views of one checkpoint: profiles against layer index and layer × module heatmaps."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import (COLORSCALE, HEIGHT, HOVER_NUMBER, METRICS, SHORT, base_layout, choose, layer_dtick, line_style,
                     module_selector, module_types, names, pick_run_ckpt, tick_style, txt)
from .format import fmt_range

SCALES = ("shared", "run")


def _layer_rows(analysis, run: str, checkpoint: str) -> pd.DataFrame:
    t = analysis.table
    rows = t[(t["run"] == run) & (t["checkpoint"] == checkpoint) & t["layer"].notna()]
    return rows.sort_values(["module", "layer"])


def profile(analysis, run: str | None = None, checkpoint: str | None = None) -> go.Figure:
    """ΔM and ΔD against layer for one checkpoint, one line per module type (each its own colour,
    dash and marker, so equal lines stay visible); the legend sits above the panels, never scrolls."""
    run, checkpoint = pick_run_ckpt(analysis, run, checkpoint)
    rows = _layer_rows(analysis, run, checkpoint)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[METRICS["delta_m"], METRICS["delta_d"]],
                        horizontal_spacing=0.1)
    modules = [m for m in module_types(analysis) if m in set(rows["module"])]
    for i, module in enumerate(modules):
        g = rows[rows["module"] == module]
        for col, metric in ((1, "delta_m"), (2, "delta_d")):
            fig.add_trace(go.Scatter(
                x=g["layer"].to_numpy(int), y=g[metric].to_numpy(float), mode="lines+markers", name=txt(module),
                legendgroup=txt(module), showlegend=col == 1, customdata=names(g["tensor"]),
                hovertemplate=f"%{{customdata}}<br>layer %{{x}}: %{{y:{HOVER_NUMBER}}}<extra></extra>",
                opacity=0.85, **line_style(i)), row=1, col=col)
    base_layout(fig, f"Per-layer profile: {txt(run)}, {txt(checkpoint)}", HEIGHT + 60, top=110, legend_rows=2)
    module_selector(fig, modules)
    fig.update_xaxes(title_text="layer", dtick=layer_dtick(rows))
    fig.update_yaxes(tick_style(rows["delta_m"]), col=1)
    fig.update_yaxes(tick_style(rows["delta_d"]), col=2)
    return fig


def colour_range(analysis, metric: str) -> tuple[float, float]:
    """One colour scale for ``metric`` across every run and checkpoint (layer tensors in fits)."""
    v = analysis.points[metric].astype(float)
    return (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)


def heatmap(analysis, metric: str = "delta_d", run: str | None = None, checkpoint: str | None = None,
            scale: str = "shared") -> go.Figure:
    """Layer × module grid of ``metric`` for one checkpoint. ``scale="shared"``: the colours mean
    the same values in every run's heatmap (``colour_range``); ``"run"``: this run's own range."""
    metric = choose(metric, list(METRICS), "metric")
    scale = choose(scale, list(SCALES), "scale")
    run, checkpoint = pick_run_ckpt(analysis, run, checkpoint)
    rows = _layer_rows(analysis, run, checkpoint)
    grid = rows.pivot_table(index="module", columns="layer", values=metric, aggfunc="mean", sort=False)
    grid = grid.reindex(index=[m for m in module_types(analysis) if m in grid.index])
    z = grid.to_numpy(float)
    lo, hi = colour_range(analysis, metric) if scale == "shared" else (float(pd.Series(z.ravel()).min()),
                                                                       float(pd.Series(z.ravel()).max()))
    fig = go.Figure(go.Heatmap(
        z=z, x=[int(c) for c in grid.columns], y=[txt(m) for m in grid.index], colorscale=COLORSCALE,
        zmin=lo, zmax=hi, colorbar={**tick_style([lo, hi]), "title": {"text": SHORT[metric]}},
        hovertemplate=f"%{{y}}, layer %{{x}}: %{{z:{HOVER_NUMBER}}}<extra></extra>", hoverongaps=False))
    title = (f"{METRICS[metric]}, layer × module: {txt(run)}, {txt(checkpoint)}"
             f"<br><span style='font-size:13px'>colour scale {fmt_range(lo, hi)}, "
             f"{'the same in every run and checkpoint' if scale == 'shared' else 'this run and checkpoint only'}</span>")
    base_layout(fig, title, 160 + 30 * max(len(grid.index), 4))
    fig.update_layout(xaxis={"title": {"text": "layer"}, "dtick": layer_dtick(rows)},
                      yaxis={"autorange": "reversed", "automargin": True})
    return fig
