"""Number formatting for the report: undefined statistics read "n/a", never "nan"."""

from __future__ import annotations

import math

# The columns of ``Analysis.stats()`` the report reads for "the" r's p-value and 95% CI: the
# paper's Pearson r with its layer-cluster bootstrap CI and layer-permutation p.
STAT = {"p": "pearson_p", "ci_low": "pearson_ci_low", "ci_high": "pearson_ci_high"}
# Detrended statistics shown next to it when present (removing the shared step/depth trends).
DETRENDED = {"within_checkpoint_r": "within-checkpoint r", "partial_r": "partial r"}


def stat(s, name: str):
    """``s[STAT[name]]`` of a stats row or verdict record (a Series or dict); None when absent."""
    return s.get(STAT[name])


def missing(x) -> bool:
    try:
        return x is None or not math.isfinite(float(x))
    except (TypeError, ValueError):
        return True


def fmt(x, spec: str = ".3g") -> str:
    return "n/a" if missing(x) else format(float(x), spec)


def fmt_p(p) -> str:
    if missing(p):
        return "n/a"
    return "< 1e-300" if float(p) == 0 else format(float(p), ".2g")


def fmt_scaled(x, scale: float, spec: str = ".3g") -> str:
    """``x`` to ``spec``, but "0" when it is below 1e-9 of ``scale`` (the size of the values it
    was computed from): rounding noise such as an intercept of 2e-17 on z-scores is not a number."""
    if missing(x):
        return "n/a"
    return "0" if abs(float(x)) < 1e-9 * abs(scale) else format(float(x), spec)


def fmt_range(lo, hi) -> str:
    """"lo – hi" in one notation: both in powers of ten when the top is below 1e-3, else plain."""
    spec = ".2e" if not missing(hi) and abs(float(hi)) < 1e-3 else ".3g"
    return f"{fmt(lo, spec)} – {fmt(hi, spec)}"


def ci_text(s) -> str:
    """`` [lo, hi]`` (95% CI of r) or "" when undefined."""
    lo, hi = stat(s, "ci_low"), stat(s, "ci_high")
    if missing(lo) or missing(hi):
        return ""
    return f" [{float(lo):+.2f}, {float(hi):+.2f}]"
