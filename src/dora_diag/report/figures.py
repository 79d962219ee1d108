"""Plotly figures of an analysis; ``Analysis.figure(kind, ...)`` and the HTML report use these.

Kinds (``FIGURES``):

- ``"scatter"``    the DoRA paper's Figure 2 for one module type: x = ΔD, y = ΔM, one point per
  (layer, checkpoint), colour = step, OLS line, r / slope / p / 95% CI in the panel title.
  Runs sit side by side with shared axes. ``module=`` (default: the first module type),
  ``runs=`` (default: all).
- ``"profile"``    ΔM and ΔD against layer index, one line per module type. ``run=``,
  ``checkpoint=`` (default: the first run, its last checkpoint).
- ``"heatmap"``    layer × module of ``metric="delta_d"`` or ``"delta_m"``; ``run=``, ``checkpoint=``.
- ``"trajectory"`` mean ΔM and ΔD over layers against training step, per run and module type;
  ``runs=``.
- ``"training"``   loss curves (and eval metrics) from the runs' training logs; ``runs=``.

Unknown kinds, modules, runs, checkpoints or metrics raise ValueError listing the valid ones.
Names from checkpoints are HTML-escaped in every figure text, as plotly renders HTML there::

    a = dora_diag.compare("base/", "LoRA=runs/lora")
    a.figure("scatter", module="q_proj").show()
    a.figure("heatmap", metric="delta_m", run="LoRA", checkpoint="checkpoint-200")
"""

from __future__ import annotations

import plotly.graph_objects as go

from .common import checkpoints, module_types, run_labels, training_logs
from .layers import heatmap, profile
from .scatter import scatter
from .trajectory import training, trajectory

FIGURES = {"scatter": scatter, "profile": profile, "heatmap": heatmap, "trajectory": trajectory,
           "training": training}

__all__ = ["FIGURES", "checkpoints", "make_figure", "module_types", "run_labels", "training_logs"]


def make_figure(analysis, kind: str, **kwargs) -> go.Figure:
    if kind not in FIGURES:
        raise ValueError(f"unknown figure kind {kind!r}; choose one of {sorted(FIGURES)}")
    return FIGURES[kind](analysis, **kwargs)
