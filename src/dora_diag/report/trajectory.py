"""Views across checkpoints: ΔM/ΔD trajectories and the training log's learning curves."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import (HOVER_NUMBER, base_layout, line_style, module_selector, module_types, names, palette, run_labels,
                     steps_known, tick_style, training_logs, txt, with_order)

PANEL_HEIGHT = 230


def trajectory(analysis, runs: list[str] | None = None) -> go.Figure:
    """Small multiples: one row per run, mean ΔM (left) and ΔD (right) over layers against step,
    one line per module type in one legend shared by all rows (a module keeps its style)."""
    runs = list(runs) if runs is not None else run_labels(analysis)
    pts = with_order(analysis, analysis.points[analysis.points["run"].isin(runs)])
    means = (pts.groupby(["run", "module", "order", "checkpoint"], sort=False)
             .agg(when=("when", "first"), delta_m=("delta_m", "mean"), delta_d=("delta_d", "mean"))
             .reset_index().sort_values(["run", "order"]))
    rows = max(len(runs), 1)
    fig = make_subplots(rows=rows, cols=2, shared_xaxes=True, horizontal_spacing=0.1,
                        vertical_spacing=min(0.12, 0.5 / rows),
                        subplot_titles=[f"{txt(r)}: mean {m} over layers" for r in runs for m in ("ΔM", "ΔD")])
    modules = module_types(analysis)
    for row, run in enumerate(runs, start=1):
        mine = means[means["run"] == run]
        for module, g in mine.groupby("module", sort=False):
            for col, metric in ((1, "delta_m"), (2, "delta_d")):
                fig.add_trace(go.Scatter(
                    x=g["when"].to_numpy(float), y=g[metric].to_numpy(float), mode="lines+markers",
                    name=txt(module), legendgroup=txt(module), showlegend=row == 1 and col == 1,
                    customdata=names(g["checkpoint"]), **line_style(modules.index(module)),
                    hovertemplate=f"%{{customdata}}: %{{y:{HOVER_NUMBER}}}<extra>{txt(run)} · %{{fullData.name}}</extra>"),
                    row=row, col=col)
        for col, metric in ((1, "delta_m"), (2, "delta_d")):
            fig.update_yaxes(tick_style(mine[metric]), row=row, col=col)
    base_layout(fig, "Trajectories across checkpoints", 180 + PANEL_HEIGHT * rows, top=110, legend_rows=2)
    fig.update_layout(legend_title_text="module:")
    module_selector(fig, [m for m in modules if m in set(means["module"])])
    fig.update_xaxes(title_text="step" if steps_known(pts) else "checkpoint #", row=rows)
    return fig


# HF Trainer logs speed next to the eval metrics; those are not learning curves.
NOT_CURVES = ("_runtime", "_per_second")
# Metrics in [0, 1] where higher is better; everything else (losses, perplexity) goes on the loss axis.
SCORE_WORDS = ("acc", "match", "f1", "precision", "recall", "bleu", "rouge")
PANELS = ("loss", "accuracy / scores")


def curve_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if (c == "loss" or c.startswith("eval_")) and not c.endswith(NOT_CURVES)
            and pd.api.types.is_numeric_dtype(df[c])]


def is_score(column: str) -> bool:
    return any(w in column for w in SCORE_WORDS)


def training(analysis, runs: list[str] | None = None) -> go.Figure:
    """Loss (left panel) and accuracy-like eval metrics (right panel, 0-1) against step; colour = run,
    dash = metric. One panel when no run logged a score."""
    logs = training_logs(analysis)
    if not logs:
        raise ValueError("no run has a training log (metrics.jsonl or trainer_state.json log_history)")
    runs = [r for r in (runs if runs is not None else run_labels(analysis)) if r in logs]
    scores = any(is_score(c) for r in runs for c in curve_columns(logs[r]))
    fig = make_subplots(rows=1, cols=2 if scores else 1, subplot_titles=PANELS if scores else PANELS[:1],
                        horizontal_spacing=0.1)
    for ri, run in enumerate(runs):
        df = logs[run]
        for c in curve_columns(df):
            s = df[["step", c]].dropna()
            same = [k for k in curve_columns(df) if is_score(k) == is_score(c)]
            fig.add_trace(go.Scatter(
                x=s["step"].to_numpy(float), y=s[c].to_numpy(float), mode="lines+markers",
                name=txt(f"{run} · {c}" if len(runs) > 1 else c), legendgroup=txt(run),
                line={"color": palette(ri), "dash": line_style(same.index(c))["line"]["dash"]}, marker={"size": 4},
                hovertemplate=f"step %{{x}}: %{{y:{HOVER_NUMBER}}}<extra>%{{fullData.name}}</extra>"),
                row=1, col=2 if scores and is_score(c) else 1)
    base_layout(fig, "Training log", 480, legend_rows=3)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss", col=1)
    if scores:
        fig.update_yaxes(title_text="score", range=[0, 1.02], col=2)
    return fig


def final_evals(analysis) -> list[dict]:
    """Per run with a log: the step and value of each eval metric's last record (not speeds)."""
    out, logs = [], training_logs(analysis)
    for run in run_labels(analysis):
        df = logs.get(run)
        if df is None:
            continue
        evals = {}
        for c in curve_columns(df):
            s = df[["step", c]].dropna()
            if c.startswith("eval_") and len(s):
                evals[c] = (int(s["step"].iloc[-1]), float(s[c].iloc[-1]))
        if evals:
            out.append({"run": run, **evals})
    return out
