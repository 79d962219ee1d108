"""Relative evidence: a LoRA run's coupling against full fine-tuning and DoRA runs on the same base.

That is the paper's actual argument — LoRA moves magnitude and direction unlike full
fine-tuning, DoRA like it. Runs on one base share its layers, so the difference of their
statistics gets a *paired* layer bootstrap: each resample draws the same layers for both runs.
"""

from __future__ import annotations

import math

import pandas as pd

from ..methods import METHODS
from . import coupling
from .stats import MIN_POINTS, make_cube, unit_keys

KIND = "partial"
REFERENCE_METHODS = ("ft", *(name for name, m in METHODS.items() if m.magnitude))


def relative_evidence(analysis, run: str) -> list[dict]:
    """[{"versus", "method", "statistic", "value", "reference", "difference", "ci_low", "ci_high",
    "units"}] for ``run`` against every full fine-tuning or DoRA-family run of ``analysis``."""
    pts = analysis.points[analysis.points["group"] == ""]
    methods = analysis.methods
    out = []
    for other in analysis.runs:
        if other == run or methods.get(other) not in REFERENCE_METHODS:
            continue
        out.append(paired_difference(pts[pts["run"] == run], pts[pts["run"] == other])
                   | {"versus": other, "method": methods[other]})
    return out


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, kind: str = KIND) -> dict:
    """statistic(a) − statistic(b) with a 95% paired layer-bootstrap CI over their common layers."""
    units = sorted(set(unit_keys(a)) & set(unit_keys(b)))
    out = {"statistic": f"{kind}_r", "units": len(units)}
    if len(units) < MIN_POINTS:
        return out | dict.fromkeys(("value", "reference", "difference", "ci_low", "ci_high"), math.nan)
    ca, cb = make_cube(a, units), make_cube(b, units)
    w = coupling.bootstrap_weights(len(units))
    (va, ba), (vb, bb) = (coupling.estimate_and_bootstrap(c, kind, w) for c in (ca, cb))
    lo, hi = coupling.percentile_ci(ba - bb)
    return out | {"value": va, "reference": vb, "difference": va - vb, "ci_low": lo, "ci_high": hi}
