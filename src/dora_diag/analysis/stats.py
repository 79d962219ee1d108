"""Correlation of magnitude and direction changes, as in the DoRA paper's Figure 2.

Points are (layer, checkpoint) pairs of one module type in one run: x = ΔD, y = ΔM.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
# scipy.special, not scipy.stats: the latter adds ~0.5-1 s to every command's start-up.
from scipy.special import betainc

MIN_POINTS = 3
STAT_COLUMNS = ["n", "pearson_r", "p_value", "ci_low", "ci_high", "spearman_rho", "slope", "intercept"]


def fit(x: np.ndarray, y: np.ndarray) -> dict:
    """Pearson r with two-sided p and 95% Fisher-z CI, Spearman ρ, OLS slope/intercept of y on x.

    Undefined quantities (n < 3, a constant variable) are NaN, never an exception; outputs
    render them as "n/a".
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(len(x))
    out = dict.fromkeys(STAT_COLUMNS, math.nan)
    out["n"] = n
    if n < MIN_POINTS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    r = _pearson(x, y)
    # Two-sided p of t = r sqrt((n-2)/(1-r^2)) on n-2 degrees of freedom, in its beta form.
    out["pearson_r"], out["p_value"] = r, float(betainc((n - 2) / 2, 0.5, max(0.0, 1 - r * r)))
    if n > 3:
        z, half = math.atanh(max(min(r, 1 - 1e-15), -1 + 1e-15)), 1.959963984540054 / math.sqrt(n - 3)
        out["ci_low"], out["ci_high"] = math.tanh(z - half), math.tanh(z + half)
    out["spearman_rho"] = _pearson(_ranks(x), _ranks(y))
    slope, intercept = np.polyfit(x, y, 1)
    out["slope"], out["intercept"] = float(slope), float(intercept)
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.clip(np.corrcoef(x, y)[0, 1], -1.0, 1.0))


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their average rank (Spearman's convention)."""
    return pd.Series(v).rank(method="average").to_numpy()


def fit_points(points: pd.DataFrame) -> pd.DataFrame | None:
    """The rows that enter fits: whole tensors inside layers, with finite values."""
    ok = (points["layer"].notna() & points["delta_d"].notna() & points["delta_m"].notna()
          & ~points["flags"].str.contains("nonfinite", regex=False))
    return points[ok]


def grouped_fits(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    pts = fit_points(table)
    records = []
    for key, g in pts.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        records.append({**dict(zip(by, key)), **fit(g["delta_d"].to_numpy(), g["delta_m"].to_numpy())})
    return pd.DataFrame.from_records(records, columns=by + STAT_COLUMNS)


def standardize_within(pts: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """z-score ΔD and ΔM within each group.

    Module types live on different scales (an MLP projection can move 10x more than a query),
    so pooling raw values would mostly measure the between-module spread, not the coupling of
    magnitude and direction inside a module. Standardizing first gives a pooled r that is a
    weighted average of the within-module relationships.
    """
    def z(s: pd.Series) -> pd.Series:
        sd = s.std(ddof=0)
        return (s - s.mean()) / sd if sd > 0 else s * np.nan

    out = pts.copy()
    for col in ("delta_d", "delta_m"):
        out[col] = pts.groupby(by, dropna=False)[col].transform(z)
    return out


def pooled_fits(table: pd.DataFrame, by: list[str] = ["run"]) -> pd.DataFrame:  # noqa: B006
    """Per run, one fit over all module types after standardizing within each module type."""
    pts = standardize_within(fit_points(table), by + ["module"])
    pts = pts.assign(module="(pooled)")
    return grouped_fits(pts, by + ["module"])
