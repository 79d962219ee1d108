"""Correlation of magnitude and direction changes, as in the DoRA paper's Figure 2, and beyond it.

Points are (layer, checkpoint) cells of one module type in one run: x = ΔD, y = ΔM. The
independent unit is the layer (see ``coupling``): the decision-grade CIs and p-values resample
and permute layers. The textbook Fisher-z interval and t-test p, which treat every point as
independent, are kept as ``naive_*`` columns for comparison only.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..architecture.modules import in_model_order
from . import coupling
from .student_t import betainc
from .coupling import KINDS, Cube

MIN_POINTS = 3
POOLED = "(pooled)"
NAIVE_COLUMNS = ["n", "pearson_r", "naive_p", "naive_ci_low", "naive_ci_high", "spearman_rho", "slope", "intercept"]
COUPLING_COLUMNS = [f"{k}{s}" for k in KINDS for s in ("_r", "_ci_low", "_ci_high", "_p") if f"{k}{s}" != "pearson_r"]
MODULE_COLUMNS = (["run", "method", "module", "n", "units", "checkpoints", "pearson_r"] + COUPLING_COLUMNS
                  + NAIVE_COLUMNS[2:] + ["ci_method", "p_method"])
LAYER_COLUMNS = ["run", "method", "layer"] + NAIVE_COLUMNS


def fit(x: np.ndarray, y: np.ndarray) -> dict:
    """Pearson r with the naive two-sided t-test p and 95% Fisher-z CI (points taken as
    independent), Spearman ρ, OLS slope/intercept of y on x.

    Undefined quantities (n < 3, a constant variable) are NaN, never an exception; outputs
    render them as "n/a".
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(len(x))
    out = dict.fromkeys(NAIVE_COLUMNS, math.nan)
    out["n"] = n
    if n < MIN_POINTS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    r = _pearson(x, y)
    # Two-sided p of t = r sqrt((n-2)/(1-r^2)) on n-2 degrees of freedom, in its beta form.
    out["pearson_r"], out["naive_p"] = r, betainc((n - 2) / 2, 0.5, max(0.0, 1 - r * r), r * r)
    if n > 3:
        z, half = math.atanh(max(min(r, 1 - 1e-15), -1 + 1e-15)), 1.959963984540054 / math.sqrt(n - 3)
        out["naive_ci_low"], out["naive_ci_high"] = math.tanh(z - half), math.tanh(z + half)
    out["spearman_rho"] = _pearson(_ranks(x), _ranks(y))
    slope, intercept = np.polyfit(x, y, 1)
    out["slope"], out["intercept"] = float(slope), float(intercept)
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.clip(np.corrcoef(x, y)[0, 1], -1.0, 1.0))


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their average rank (Spearman's convention)."""
    return pd.Series(v).rank(method="average").to_numpy()


def fit_points(table: pd.DataFrame) -> pd.DataFrame:
    """The rows that can enter fits: tensors inside a layer with finite ΔD and ΔM."""
    ok = (table["layer"].notna() & table["delta_d"].notna() & table["delta_m"].notna()
          & ~table["flags"].str.contains("nonfinite", regex=False))
    return table[ok]


def unit_keys(pts: pd.DataFrame) -> list[tuple]:
    """The independent unit of each point: its layer, within its stack (a tower of a multi-tower
    model; "" for the only one) when the table says."""
    stack = pts["stack"].astype(object).fillna("").astype(str) if "stack" in pts.columns else pd.Series("", index=pts.index)
    return list(zip(stack, pts["layer"].astype(int)))


def make_cube(pts: pd.DataFrame, units: list | None = None) -> Cube:
    """The (layer, checkpoint, module) cube of one run's points; ``units`` fixes the layer list
    (to align runs for paired comparisons), else the points' own layers in order."""
    keys = unit_keys(pts)
    units = sorted(set(keys)) if units is None else list(units)
    ckpts = list(dict.fromkeys(pts.sort_values("step", kind="stable", na_position="last")["checkpoint"]))
    # One cell per tensor: experts of one MoE layer are separate cells of the same unit.
    mkeys = list(pts[[c for c in ("stack", "module", "expert") if c in pts.columns]].astype(str)
                 .itertuples(index=False, name=None))
    modules = list(dict.fromkeys(mkeys))
    li = {u: i for i, u in enumerate(units)}
    ci, mi = {c: i for i, c in enumerate(ckpts)}, {m: i for i, m in enumerate(modules)}
    shape = (len(units), len(ckpts), len(modules))
    x, y, mask = np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=bool)
    for key, c, m, dd, dm in zip(keys, pts["checkpoint"], mkeys, pts["delta_d"], pts["delta_m"]):
        if key not in li:
            continue
        cell = (li[key], ci[c], mi[m])
        x[cell], y[cell], mask[cell] = dd, dm, True
    depth = np.array([float(u[-1]) for u in units]) if units else np.zeros(0)
    return Cube(x, y, mask, tuple(units), depth)


def coupling_record(cube: Cube) -> dict:
    """The three layer-level statistics of one cube, with their CIs, p-values and methods."""
    out = {"units": len(cube.units), "checkpoints": int(cube.mask.any(axis=(0, 2)).sum())}
    estimates = (coupling.estimate_all(cube) if len(cube.units) >= MIN_POINTS
                 else dict.fromkeys(KINDS, coupling.Estimate(*[math.nan] * 4)))
    for kind, e in estimates.items():
        if kind != "pearson":
            out[f"{kind}_r"] = e.r
        out.update({f"{kind}_ci_low": e.ci_low, f"{kind}_ci_high": e.ci_high, f"{kind}_p": e.p})
    out["ci_method"] = coupling.CI_METHOD
    out["p_method"] = coupling.p_method(len(cube.units))
    return out


def module_stats(pts: pd.DataFrame, methods: dict[str, str], runs: list[str]) -> pd.DataFrame:
    """One row per run x module type (fused groups included) and a ``(pooled)`` row per run over
    all whole-tensor module types, z-scored within each, from the fit points ``pts``
    (``fit_points``). Columns: ``MODULE_COLUMNS``."""
    records = []
    for run in runs:
        rp = pts[pts["run"] == run]
        for module in _module_order(rp):
            g = rp[rp["module"] == module]
            records.append(_record(run, methods, module, g))
        whole = rp[rp["group"] == ""]
        records.append(_record(run, methods, POOLED, whole))
    return pd.DataFrame.from_records(records, columns=MODULE_COLUMNS)


def expert_stats(pts: pd.DataFrame, methods: dict[str, str], runs: list[str]) -> pd.DataFrame:
    """The ``--by-expert`` view: one row per run x module type x expert of MoE layers (tensors with
    an expert index), each fit over that expert's (layer, checkpoint) points of ``pts`` (``fit_points``)."""
    pts = pts[pts["expert"].notna()] if "expert" in pts.columns else pts.iloc[:0]
    records = []
    for run in runs:
        rp = pts[pts["run"] == run]
        for (module, expert), g in rp.groupby(["module", "expert"], sort=True):
            records.append({**_record(run, methods, module, g), "expert": int(expert)})
    columns = MODULE_COLUMNS[:3] + ["expert"] + MODULE_COLUMNS[3:]
    return pd.DataFrame.from_records(records, columns=columns)


def _record(run: str, methods: dict, module: str, g: pd.DataFrame) -> dict:
    cube = make_cube(g)
    naive = fit(*_standardized(g)) if module == POOLED else fit(g["delta_d"].to_numpy(), g["delta_m"].to_numpy())
    return {"run": run, "method": methods.get(run, "unknown"), "module": module, **naive, **coupling_record(cube)}


def _standardized(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """ΔD, ΔM z-scored within each module type: module types live on different scales (an MLP
    projection can move 10x more than a query), so pooling raw values would mostly measure the
    spread between modules, not the coupling inside them."""
    z = standardize_within(g, ["module"])
    return z["delta_d"].to_numpy(), z["delta_m"].to_numpy()


def standardize_within(pts: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """z-score ΔD and ΔM within each group of ``by`` (NaN for a constant group)."""
    def z(s: pd.Series) -> pd.Series:
        sd = s.std(ddof=0)
        return (s - s.mean()) / sd if sd > 0 else s * np.nan

    out = pts.copy()
    for col in ("delta_d", "delta_m"):
        out[col] = pts.groupby(by, dropna=False)[col].transform(z)
    return out


def _module_order(pts: pd.DataFrame) -> list[str]:
    return in_model_order(pts["module"])


def layer_stats(pts: pd.DataFrame, methods: dict[str, str], runs: list[str]) -> pd.DataFrame:
    """One naive fit per run x layer over its whole-tensor (module, checkpoint) points of ``pts``
    (``fit_points``), z-scored within module type. A layer's points all share that layer, so
    there is no independent unit here: these are descriptive, without a layer-level CI."""
    pts = standardize_within(pts[pts["group"] == ""], ["run", "module"])
    records = []
    for run in runs:
        rp = pts[pts["run"] == run]
        for layer, g in rp.groupby("layer", sort=True):
            records.append({"run": run, "method": methods.get(run, "unknown"), "layer": layer,
                            **fit(g["delta_d"].to_numpy(), g["delta_m"].to_numpy())})
    return pd.DataFrame.from_records(records, columns=LAYER_COLUMNS)
