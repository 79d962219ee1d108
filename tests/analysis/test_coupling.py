"""Layer-level coupling statistics against an independent pandas/lstsq reference and on data with
known dependence structure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dora_diag.analysis import coupling
from dora_diag.analysis.stats import fit, fit_points, make_cube, module_stats
from dora_diag.analysis.table import build_table


def _rows(f, layers: int, ckpts: int, modules=("q_proj",), seed: int = 0, run: str = "R") -> list[dict]:
    """``f(rng, layer, ckpt, module) -> (ΔD, ΔM)`` on every cell."""
    g = np.random.default_rng(seed)
    rows = []
    for c in range(ckpts):
        for m in modules:
            for layer in range(layers):
                dd, dm = f(g, layer, c, m)
                rows.append({"run": run, "step": 10 * (c + 1), "checkpoint": f"checkpoint-{10 * (c + 1)}",
                             "tensor": f"layers.{layer}.{m}.weight", "layer": layer, "module": m, "group": "",
                             "rows": 4, "cols": 4, "dtype": "F32", "delta_m": dm, "delta_d": dd,
                             "rel_delta_m": dm, "zero_rows": 0, "flags": ""})
    return rows


def _table(f, layers, ckpts, modules=("q_proj",), seed=0) -> pd.DataFrame:
    return build_table(_rows(f, layers, ckpts, modules, seed), {"R": "lora"})


def _pooled(table: pd.DataFrame) -> pd.Series:
    s = module_stats(fit_points(table), {"R": "lora"}, ["R"])
    return s[s["module"] == "(pooled)"].iloc[0]


def reference(pts: pd.DataFrame, kind: str) -> float:
    """Independent: z-score per module (ddof 0), then per module least squares on [1] (pearson),
    checkpoint indicators (within_checkpoint) or indicators + depth (partial); r of the pooled residuals."""
    xs, ys = [], []
    for _, g in pts.groupby("module"):
        cols = []
        if kind == "pearson":
            cols.append(np.ones(len(g)))
        else:
            cols += [(g["checkpoint"] == c).to_numpy(float) for c in g["checkpoint"].unique()]
        if kind == "partial":
            cols.append(g["layer"].to_numpy(float))
        design = np.column_stack(cols)
        for v, out in ((g["delta_d"], xs), (g["delta_m"], ys)):
            z = ((v - v.mean()) / v.std(ddof=0)).to_numpy()
            beta, *_ = np.linalg.lstsq(design, z, rcond=None)
            out.append(z - design @ beta)
    x, y = np.concatenate(xs), np.concatenate(ys)
    return float(x @ y / math.sqrt((x @ x) * (y @ y)))


@pytest.mark.parametrize("kind", coupling.KINDS)
def test_statistics_match_the_lstsq_reference(kind):
    def f(g, layer, c, m):
        scale = {"q_proj": 1e-6, "v_proj": 1e-3}[m]
        return scale * (g.gamma(2) + layer * c), scale * 30 * (g.gamma(2) + 0.5 * layer + c)
    t = _table(f, 7, 4, ("q_proj", "v_proj"), seed=3)
    cube = make_cube(t)
    assert coupling.estimate(cube, kind) == pytest.approx(reference(t, kind), abs=1e-10)


def test_resample_weights_equal_duplicated_layers():
    """A resample's counts weigh a layer exactly as copying it that many times would."""
    def f(g, layer, c, m):
        return g.normal() + c, g.normal() + 0.3 * layer
    t = _table(f, 6, 3, ("q_proj", "v_proj"), seed=1)
    cube = make_cube(t)
    w = coupling.bootstrap_weights(6, n=5, seed=7)
    for kind in coupling.KINDS:
        got = coupling._batch_r(cube, w, kind)
        for row, value in zip(w, got):
            copies = pd.concat([t[t["layer"] == layer] for layer, count in enumerate(row.astype(int))
                                for _ in range(count)])
            assert value == pytest.approx(reference(copies, kind), abs=1e-10)


def test_estimate_and_bootstrap_standardise_once_and_equal_the_separate_calls(monkeypatch):
    def f(g, layer, c, m):
        return g.normal() + c, g.normal() + 0.3 * layer
    cube = make_cube(_table(f, 6, 3, ("q_proj", "v_proj"), seed=2))
    w = coupling.bootstrap_weights(6, n=40, seed=5)
    calls, real = [], coupling._standardized
    monkeypatch.setattr(coupling, "_standardized", lambda c: calls.append(1) or real(c))
    value, resampled = coupling.estimate_and_bootstrap(cube, "partial", w)
    assert len(calls) == 1
    assert value == pytest.approx(coupling.estimate(cube, "partial"), rel=1e-12)   # one product: last-ulp changes
    np.testing.assert_allclose(resampled, coupling.bootstrap(cube, "partial", w), rtol=1e-12)


@pytest.mark.parametrize("drop_cell", [False, True])
def test_permuted_statistics_match_the_reference_on_reordered_data(drop_cell):
    """ΔM's layers reordered (complete cubes take a shortcut, incomplete ones the general path)."""
    def f(g, layer, c, m):
        return g.normal() + c + 0.2 * layer, g.normal() + 0.5 * c
    t = _table(f, 6, 3, ("q_proj", "v_proj"), seed=8)
    if drop_cell:
        t = t.drop(index=t.index[5])
    cube = make_cube(t)
    orders = np.array([[1, 0, 2, 3, 5, 4], [5, 4, 3, 2, 1, 0]])
    for kind in coupling.KINDS:
        z = coupling._standardized(cube)
        got = coupling._r_from_sums(coupling._permuted_sums(z, orders), kind, z.shape)
        for order, value in zip(orders, got):
            dm = {(layer, c, m): v for layer, c, m, v in zip(t["layer"], t["checkpoint"], t["module"], t["delta_m"])}
            moved = t.assign(delta_m=[dm.get((order[layer], c, m), np.nan)
                                      for layer, c, m in zip(t["layer"], t["checkpoint"], t["module"])])
            assert value == pytest.approx(reference(moved.dropna(subset=["delta_m"]), kind), abs=1e-10)


def test_shared_step_trend_only_pearson_high_within_checkpoint_near_zero():
    """ΔD and ΔM each grow with the step, independently per layer otherwise: the paper's r is ~+1,
    the within-checkpoint r only sees the (independent) differences between layers."""
    t = _table(lambda g, layer, c, m: ((c + 1) * (1 + 0.05 * g.normal()), (c + 1) * (1 + 0.05 * g.normal())),
               layers=24, ckpts=5, seed=0)
    s = _pooled(t)
    assert s["pearson_r"] > 0.95
    assert abs(s["within_checkpoint_r"]) < 0.2 and s["within_checkpoint_ci_low"] < 0 < s["within_checkpoint_ci_high"]
    assert s["within_checkpoint_p"] > 0.05 and s["partial_p"] > 0.05


def test_shared_depth_trend_is_removed_by_partial_r():
    t = _table(lambda g, layer, c, m: (layer + g.normal(), layer + g.normal()), layers=30, ckpts=1, seed=2)
    s = _pooled(t)
    assert s["pearson_r"] > 0.9 and s["within_checkpoint_r"] > 0.9  # one checkpoint: nothing to centre
    assert abs(s["partial_r"]) < 0.25 and s["partial_p"] > 0.05


def test_real_coupling_survives_detrending():
    def f(g, layer, c, m):
        e = g.normal()
        return (c + 1) + layer + e, (c + 1) + layer + e + 0.3 * g.normal()
    s = _pooled(_table(f, 12, 4, seed=4))
    assert s["partial_r"] > 0.8 and s["partial_ci_low"] > 0.5 and s["partial_p"] < 0.01


def test_few_layers_many_checkpoints_naive_p_tiny_layer_p_honest():
    """Three layers, 20 checkpoints each: 60 points but 3 independent units."""
    t = _table(lambda g, layer, c, m: ((c + 1) * g.uniform(0.5, 1.5), (c + 1) * g.uniform(0.5, 1.5)),
               layers=3, ckpts=20, seed=5)
    s = _pooled(t)
    assert s["n"] == 60 and s["units"] == 3
    assert s["naive_p"] < 1e-6
    assert s["pearson_p"] >= 1 / 6 and "exact permutation" in s["p_method"] and "all 6 orders" in s["p_method"]


def test_independent_points_layer_and_naive_agree():
    """One checkpoint of independent layers: the layer is the point, so both methods answer alike."""
    g = np.random.default_rng(6)
    x = g.normal(size=60)
    y = 0.5 * x + g.normal(size=60)
    t = _table(lambda _g, layer, c, m: (x[layer], y[layer]), layers=60, ckpts=1)
    s = _pooled(t)
    naive = fit(x, y)
    assert s["pearson_r"] == pytest.approx(naive["pearson_r"], abs=1e-12)
    assert s["pearson_p"] == pytest.approx(naive["naive_p"], abs=0.01)
    assert s["pearson_ci_low"] == pytest.approx(naive["naive_ci_low"], abs=0.08)
    assert s["pearson_ci_high"] == pytest.approx(naive["naive_ci_high"], abs=0.08)


def test_deterministic_and_p_never_zero():
    t = _table(lambda g, layer, c, m: (layer + g.normal(0, 0.01), layer + g.normal(0, 0.01)), layers=9, ckpts=2)
    a, b = _pooled(t), _pooled(t)
    pd.testing.assert_series_equal(a, b)
    assert 0 < a["pearson_p"] <= 1 / 2000 * 2


def test_constant_module_is_undefined_not_an_error():
    t = _table(lambda g, layer, c, m: (1e-4, float(layer)), layers=8, ckpts=2)
    s = _pooled(t)
    assert all(math.isnan(s[f"{k}_r"]) for k in ("pearson", "within_checkpoint", "partial"))
    assert math.isnan(s["pearson_p"]) and math.isnan(s["partial_ci_low"])
