"""What every report figure shares: choices with helpful errors, checkpoint order, display text."""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..architecture.modules import in_model_order

METRICS = {"delta_d": "ΔD (mean 1 − cos)", "delta_m": "ΔM (mean |Δ‖w‖|)"}
SHORT = {"delta_d": "ΔD", "delta_m": "ΔM"}
COLORSCALE = "Viridis"
HEIGHT = 380
FONT = 14          # the page's body text size, for every figure text
LEGEND_ROW = 28    # px per row of a horizontal legend
SELECTOR_PX = 30   # px from the panels' top to a drop-down above their titles
HOVER_NUMBER = ".3~g"


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


def module_types(analysis) -> list[str]:
    """Module types with at least one layer tensor, in model order (``architecture.modules``)."""
    return in_model_order(analysis.table[analysis.table["layer"].notna()]["module"])


def checkpoints(analysis, run: str) -> list[str]:
    """Checkpoint names of ``run`` in training order."""
    info = analysis.meta.run(run)
    if info is not None:
        return [c.name for c in info.checkpoints]
    return list(dict.fromkeys(analysis.table.loc[analysis.table["run"] == run, "checkpoint"]))


def run_labels(analysis) -> list[str]:
    """Runs in the order they were given (on the command line or to ``compare``)."""
    return analysis.runs or list(dict.fromkeys(analysis.table["run"]))


def in_report_order(analysis, stats: pd.DataFrame) -> pd.DataFrame:
    """``stats`` rows by run as given, then module type in model order, "(pooled)" last per run."""
    runs = {r: i for i, r in enumerate(run_labels(analysis))}
    modules = {m: i for i, m in enumerate(module_types(analysis))}
    key = [(runs.get(r, len(runs)), modules.get(m, len(modules)), m) for r, m in zip(stats["run"], stats["module"])]
    return stats.iloc[sorted(range(len(stats)), key=key.__getitem__)].reset_index(drop=True)


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


def tick_style(values) -> dict:
    """Axis tick settings for ``values``: plain decimals (0.05, 0.1) from 1e-3 up, powers of ten
    (2×10⁻⁶) below, where plain ticks would read 0.000002 (ΔD of a short fine-tune is often 1e-6)."""
    v = np.abs(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    top = float(v.max()) if v.size else 0.0
    if top == 0 or 1e-3 <= top < 1e5:
        return {"tickformat": "~g", "exponentformat": "none"}
    return {"tickformat": "", "exponentformat": "power", "showexponent": "all"}


def base_layout(fig: go.Figure, title: str, height: int, top: int = 90, legend_rows: int = 0) -> None:
    """Title, size and fonts every report figure shares: text at body size, the title pinned to the
    top and a horizontal legend of ``legend_rows`` rows pinned to the bottom of the figure, with
    margins that keep both clear of the panels' titles and axis titles (no scrolling legends)."""
    fig.update_layout(title={"text": title, "x": 0.01, "y": 1, "yref": "container", "yanchor": "top",
                             "pad": {"t": 12}, "font": {"size": FONT + 3}},
                      height=height, template="plotly_white", font={"size": FONT - 1},
                      margin={"t": top, "b": 60 + LEGEND_ROW * legend_rows},
                      legend={"orientation": "h", "x": 0, "xanchor": "left", "y": 0, "yref": "container",
                              "yanchor": "bottom", "traceorder": "normal"})
    fig.update_annotations(font_size=FONT)


def layer_dtick(rows: pd.DataFrame) -> int:
    n = int(rows["layer"].max()) + 1 if len(rows) else 1
    return max(1, math.ceil(n / 16))


def palette(i: int) -> str:
    colors = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#7f7f7f", "#bcbd22", "#17becf")
    return colors[i % len(colors)]


def delta_m_scales(analysis) -> dict[tuple[str, str], float]:
    """(run, module) -> mean |ΔM| of its fit points: the size of the values a fit's intercept comes
    from ("(pooled)" fits run on z-scores and keep the default scale 1)."""

    pts = analysis.points
    return {k: float(v) for k, v in pts["delta_m"].abs().groupby([pts["run"], pts["module"]]).mean().items()}


SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "triangle-down", "cross", "star", "pentagon",
           "hexagon")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def line_style(i: int) -> dict:
    """Colour, dash and marker symbol of the i-th line: lines on top of each other stay distinguishable."""
    return {"line": {"color": palette(i), "dash": DASHES[i % len(DASHES)], "width": 2},
            "marker": {"symbol": SYMBOLS[i % len(SYMBOLS)], "size": 7, "color": palette(i)}}


def module_selector(fig: go.Figure, modules: list[str]) -> None:
    """A drop-down above the panels' titles showing all module types or one (traces grouped by
    module name in ``legendgroup``): 7 modules × 32 layers tangle, one at a time does not. Call
    after ``base_layout`` (its position is in px above the panels)."""
    groups = [t.legendgroup for t in fig.data]
    m = fig.layout.margin
    above = 1 + SELECTOR_PX / max(fig.layout.height - m.t - m.b, 1)
    buttons = [{"label": "all module types", "method": "restyle", "args": [{"visible": [True] * len(groups)}]}]
    buttons += [{"label": txt(m), "method": "restyle", "args": [{"visible": [g == txt(m) for g in groups]}]}
                for m in modules]
    fig.update_layout(updatemenus=[{"type": "dropdown", "buttons": buttons, "active": 0, "x": 1, "xanchor": "right",
                                    "y": above, "yanchor": "bottom", "showactive": True}])


def training_logs(analysis) -> dict[str, pd.DataFrame]:
    """Per run with a non-empty training log, its records as a frame sorted by step."""
    out = {}
    for r in analysis.meta.runs:
        log = [rec for rec in r.log if isinstance(rec, dict)]
        if log:
            out[r.label] = pd.DataFrame.from_records(log).sort_values("step")
    return out
