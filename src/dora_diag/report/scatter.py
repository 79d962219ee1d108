"""The DoRA paper's Figure 2 for one module type: ΔM against ΔD, runs side by side."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import (COLORSCALE, HOVER_NUMBER, METRICS, base_layout, choose, module_types, names, run_labels,
                     steps_known, tick_style, txt, with_order)
from .format import DETRENDED, ci_text, fmt, fmt_p, stat

# What the marker colour shows; the marker size shows the other one.
ENCODINGS = ("layer", "step")
SIZE = (6.0, 15.0)          # marker diameter range in px, smallest = first layer / checkpoint
SIZE_KEYS = 4               # at most this many marker-size entries in the legend
FIT_COLOR = "#d62728"


def scatter(analysis, module: str | None = None, runs: list[str] | None = None, shared_axes: bool = False,
            color: str = "layer") -> go.Figure:
    """Figure 2 for ``module``: one panel per run, x = ΔD, y = ΔM, one point per (layer, checkpoint).

    ``color="layer"`` colours points by layer and sizes them by checkpoint (``"step"``: the
    reverse; buttons in the figure switch). Each panel has its own axes unless ``shared_axes``.
    """
    module = choose(module, module_types(analysis), "module")
    color = choose(color, list(ENCODINGS), "color")
    all_runs = run_labels(analysis)
    runs = list(runs) if runs is not None else all_runs
    for r in runs:
        choose(r, all_runs, "run")
    pts = with_order(analysis, analysis.points[analysis.points["module"] == module])
    enc = _Encodings(pts)
    stats = analysis.stats("module")
    rows = {r: stats[(stats["run"] == r) & (stats["module"] == module)] for r in runs}
    shared = "all" if shared_axes else False
    fig = make_subplots(rows=1, cols=max(len(runs), 1), shared_xaxes=shared, shared_yaxes=shared,
                        subplot_titles=[_panel_title(r, rows[r], _detrended(analysis, r)) for r in runs],
                        horizontal_spacing=0.04 if shared_axes else 0.075)
    panels = []
    for col, run in enumerate(runs, start=1):
        p = pts[pts["run"] == run]
        panels.append((len(fig.data), p))
        fig.add_trace(_points(p, run, enc, color), row=1, col=col)
        line = _ols_line(p, rows[run])
        if line is not None:
            fig.add_trace(go.Scatter(x=line[0], y=line[1], mode="lines", line={"color": FIT_COLOR, "width": 2},
                                     name="OLS fit of ΔM on ΔD", legendgroup="fit", showlegend=col == 1,
                                     hoverinfo="skip"), row=1, col=col)
        scope = pts if shared_axes else p
        fig.update_xaxes(tick_style(scope["delta_d"]), row=1, col=col)
        fig.update_yaxes(tick_style(scope["delta_m"]), row=1, col=col)
    for trace in enc.size_keys(color):
        fig.add_trace(trace, row=1, col=1)
    base_layout(fig, f"{txt(module)}: ΔM against ΔD (DoRA paper, Figure 2)", 540, top=130, legend_rows=2)
    fig.update_layout(
        coloraxis={"colorscale": COLORSCALE, "colorbar": enc.colorbar(color), **enc.color_range(color)},
        updatemenus=[enc.toggle(fig, panels, color)], margin_r=140)
    fig.update_xaxes(title_text=METRICS["delta_d"])
    fig.update_yaxes(title_text=METRICS["delta_m"], col=1)
    return fig


class _Encodings:
    """Marker colour and size arrays for "layer" and "step" over one module type's points, so that
    every panel uses one scale and the toggle buttons can swap them."""

    def __init__(self, pts: pd.DataFrame) -> None:
        self.pts = pts
        self.known = steps_known(pts)
        self.values = {"layer": pts["layer"].astype(float), "step": pts["when"]}

    def other(self, color: str) -> str:
        return ENCODINGS[1 - ENCODINGS.index(color)]

    def label(self, what: str) -> str:
        return "layer" if what == "layer" else "step" if self.known else "checkpoint #"

    def colors(self, p: pd.DataFrame, color: str) -> np.ndarray:
        return self.values[color].loc[p.index].to_numpy(float)

    def sizes(self, p: pd.DataFrame, color: str) -> np.ndarray:
        return self._size(self.values[self.other(color)].loc[p.index].to_numpy(float), self.other(color))

    def _size(self, v: np.ndarray, what: str) -> np.ndarray:
        lo, hi = (float(self.values[what].min()), float(self.values[what].max())) if len(self.pts) else (0, 0)
        frac = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
        return SIZE[0] + frac * (SIZE[1] - SIZE[0])

    def color_range(self, color: str) -> dict:
        v = self.values[color]
        return {"cmin": float(v.min()), "cmax": float(v.max())} if len(v) else {}

    def colorbar(self, color: str) -> dict:
        bar = {"title": {"text": f"colour:<br>{self.label(color)}"}, "len": 0.6, "y": 0, "yanchor": "bottom",
               "x": 1.01, "xanchor": "left"}
        return {**bar, "dtick": _integer_dtick(self.values[color])} if color == "layer" or not self.known else bar

    def size_keys(self, color: str) -> list[go.Scatter]:
        """Legend entries for the marker sizes of both encodings (the other one's hidden)."""
        out = []
        for what in ENCODINGS:
            for k, v in enumerate(_key_values(self.values[what])):
                name = f"size: {self.label(what)} {v:g}" if k == 0 else f"{v:g}"
                out.append(go.Scatter(x=[None], y=[None], mode="markers", name=name, legendgroup=f"size-{what}",
                                      visible=self.other(color) == what, hoverinfo="skip",
                                      marker={"size": float(self._size(np.array([v]), what)[0]), "color": "#9aa0a6",
                                              "line": {"width": 0.5, "color": "#333"}}))
        return out

    def toggle(self, fig: go.Figure, panels: list[tuple[int, pd.DataFrame]], color: str) -> dict:
        """Buttons restyling every panel's points (trace index, rows) and the size legend to either encoding."""
        keys = [i for i, t in enumerate(fig.data) if str(t.legendgroup or "").startswith("size-")]
        buttons = []
        for c in ENCODINGS:
            data = {"marker.color": [self.colors(p, c) for _, p in panels] + [fig.data[i].marker.color for i in keys],
                    "marker.size": [self.sizes(p, c) for _, p in panels] + [fig.data[i].marker.size for i in keys],
                    "visible": [True] * len(panels) + [fig.data[i].legendgroup == f"size-{self.other(c)}"
                                                       for i in keys]}
            layout = {"coloraxis.colorbar": self.colorbar(c),
                      **{f"coloraxis.{k}": v for k, v in self.color_range(c).items()}}
            buttons.append({"label": f"colour = {self.label(c)}", "method": "update",
                            "args": [data, layout, [i for i, _ in panels] + keys]})
        return {"type": "buttons", "direction": "down", "x": 1.01, "xanchor": "left", "y": 1, "yanchor": "top",
                "pad": {"t": 0, "l": 0}, "showactive": True, "active": ENCODINGS.index(color), "buttons": buttons}


def _points(p: pd.DataFrame, run: str, enc: _Encodings, color: str) -> go.Scatter:
    custom = np.stack([names(p["tensor"]), names(p["checkpoint"]), p["layer"].astype(str), names(p["run"])],
                      axis=-1) if len(p) else None
    return go.Scatter(
        x=p["delta_d"].to_numpy(float), y=p["delta_m"].to_numpy(float), mode="markers", name=txt(run),
        showlegend=False, customdata=custom,
        marker={"color": enc.colors(p, color), "coloraxis": "coloraxis", "size": enc.sizes(p, color),
                "line": {"width": 0.5, "color": "#333"}},
        hovertemplate=(f"%{{customdata[0]}}<br>%{{customdata[1]}}, layer %{{customdata[2]}}"
                       f"<br>ΔD = %{{x:{HOVER_NUMBER}}}<br>ΔM = %{{y:{HOVER_NUMBER}}}<extra>%{{customdata[3]}}</extra>"))


def _key_values(v: pd.Series) -> list[float]:
    """Up to ``SIZE_KEYS`` distinct values spread over ``v``'s range, first and last included."""
    distinct = sorted(set(v.dropna().astype(float)))
    if len(distinct) <= SIZE_KEYS:
        return distinct
    picks = np.linspace(0, len(distinct) - 1, SIZE_KEYS).round().astype(int)
    return [distinct[i] for i in dict.fromkeys(picks)]


def _integer_dtick(v: pd.Series) -> int:
    span = float(v.max() - v.min()) if len(v) else 0.0
    return max(1, math.ceil(span / 8))


def _panel_title(run: str, row: pd.DataFrame, detrended: str) -> str:
    """Run, r with its 95% CI, p and n; the detrended statistics when the analysis has them. Short
    lines: three panels must fit side by side in a 900 px page."""
    if row.empty:
        return f"<b>{txt(run)}</b>: no points"
    s = row.iloc[0]
    units = s.get("units")
    n = f"n = {int(s['n'])}" + ("" if units is None or pd.isna(units) else f" ({int(units)} layers)")
    lines = [f"<b>{txt(run)}</b>: r = {fmt(s['pearson_r'], '+.2f')}{ci_text(s)}", f"p = {fmt_p(stat(s, 'p'))}, {n}"]
    if detrended in s and not pd.isna(s[detrended]):
        lines.append(f"{DETRENDED[detrended]} = {fmt(s[detrended], '+.2f')}")
    return "<br>".join(lines)


def _detrended(analysis, run: str) -> str:
    """The detrended statistic the run's verdict decided on, else the within-checkpoint r."""
    for v in analysis.verdicts or ():
        if v.run == run and v.statistic in DETRENDED:
            return v.statistic
    return "within_checkpoint_r"


def _ols_line(p: pd.DataFrame, row: pd.DataFrame):
    if row.empty or p.empty or not math.isfinite(row.iloc[0]["slope"]):
        return None
    x = np.array([p["delta_d"].min(), p["delta_d"].max()], dtype=float)
    return x, row.iloc[0]["intercept"] + row.iloc[0]["slope"] * x
