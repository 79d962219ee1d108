"""Plotly figures of an analysis; ``Analysis.figure(kind, ...)`` and the HTML report use these.

Kinds (``FIGURES``):

- ``"scatter"``    the DoRA paper's Figure 2 for one module type: x = ΔD, y = ΔM, one point per
  (layer, checkpoint), colour = layer and marker size = step (``color="step"`` swaps them; so do
  buttons in the figure), OLS line in the legend, r / 95% CI / p / n in each panel's title.
  Runs sit side by side, each panel autoscaled (``shared_axes=True``: one scale for all).
  ``module=`` (default: the first module type), ``runs=`` (default: all, in the order given).
- ``"profile"``    ΔM and ΔD against layer index, one line per module type. ``run=``,
  ``checkpoint=`` (default: the first run, its last checkpoint).
- ``"heatmap"``    layer × module of ``metric="delta_d"`` or ``"delta_m"``; ``run=``, ``checkpoint=``;
  ``scale="shared"`` (default: one colour scale for every run and checkpoint) or ``"run"``.
- ``"trajectory"`` mean ΔM and ΔD over layers against training step: one row of panels per
  run, one line per module type; ``runs=``.
- ``"training"``   loss (left) and accuracy-like eval metrics (right) from the runs' training
  logs; ``runs=``.

Unknown kinds, modules, runs, checkpoints or metrics raise ValueError listing the valid ones.
Names from checkpoints are HTML-escaped in every figure text, as plotly renders HTML there::

    a = dora_diag.compare("base/", "LoRA=runs/lora")
    a.figure("scatter", module="q_proj").show()
    a.figure("heatmap", metric="delta_m", run="LoRA", checkpoint="checkpoint-200")
    a.figure("scatter").write_image("figure2.pdf")   # static export: kaleido + a system Chromium

The figures are ``ReportFigure``s: plotly Figures whose notebook output also carries a static
SVG (when a renderer is available), so a saved notebook shows them without JavaScript.
"""

from __future__ import annotations

import os
from pathlib import Path

import plotly.graph_objects as go

from .common import METRICS, checkpoints, delta_m_scales, in_report_order, module_types, run_labels, training_logs
from .export import ReportFigure, write_figures
from .layers import heatmap, profile
from .scatter import scatter
from .trajectory import final_evals, training, trajectory

FIGURES = {"scatter": scatter, "profile": profile, "heatmap": heatmap, "trajectory": trajectory,
           "training": training}

__all__ = ["FIGURES", "checkpoints", "delta_m_scales", "final_evals", "in_report_order", "make_figure", "module_types",
           "report_figures", "run_labels", "training_logs"]


def make_figure(analysis, kind: str, **kwargs) -> go.Figure:
    if kind not in FIGURES:
        raise ValueError(f"unknown figure kind {kind!r}; choose one of {sorted(FIGURES)}")
    return ReportFigure(FIGURES[kind](analysis, **kwargs))


def report_figures(analysis) -> dict[str, list[tuple[str, go.Figure]]]:
    """Every figure of the HTML report by kind, in report order, each with a name for its file
    (run and module names as given: callers make them safe for a file system)."""
    modules, runs = module_types(analysis), run_labels(analysis)
    out = {"scatter": [(f"figure2 {m}", scatter(analysis, module=m)) for m in modules]}
    if modules:
        out["profile"] = [(f"profile {r}", profile(analysis, run=r)) for r in runs]
        # by metric, then run: heatmaps on one colour scale sit next to each other
        out["heatmap"] = [(f"heatmap {m} {r}", heatmap(analysis, metric=m, run=r)) for m in METRICS for r in runs]
        out["trajectory"] = [("trajectory", trajectory(analysis))]
    if training_logs(analysis):
        out["training"] = [("training", training(analysis))]
    return out


def export_report_figures(analysis, directory: str | os.PathLike,
                          formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Every figure of the HTML report (``report_figures``) as files in ``directory``."""
    named = [item for items in report_figures(analysis).values() for item in items]
    return write_figures(named, directory, formats)
