"""Number formatting for the report: undefined statistics read "n/a", never "nan"."""

from __future__ import annotations

import math


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


def ci_text(s) -> str:
    """`` [lo, hi]`` (95% CI of r) or "" when undefined."""
    if missing(s["ci_low"]) or missing(s["ci_high"]):
        return ""
    return f" [{float(s['ci_low']):+.2f}, {float(s['ci_high']):+.2f}]"
