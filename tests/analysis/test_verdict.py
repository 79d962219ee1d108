"""The "will DoRA help?" rule on synthetic tables with known correlations, and ``check()`` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

import dora_diag
from dora_diag.analysis.analysis import Analysis
from dora_diag.analysis.table import build_table
from dora_diag.analysis.verdict import verdict
from dora_diag.errors import InputError


def _analysis(points: dict[str, tuple[np.ndarray, np.ndarray]], kind: str = "lora", run: str = "R") -> Analysis:
    """One run; ``points[module] = (ΔD, ΔM)`` over layers (one checkpoint)."""
    rows = []
    for module, (dd, dm) in points.items():
        for layer, (d, m) in enumerate(zip(dd, dm)):
            rows.append({"run": run, "step": 10, "checkpoint": "c", "tensor": f"l.{layer}.{module}.weight",
                         "layer": layer, "module": module, "group": "", "rows": 4, "cols": 4, "dtype": "F32",
                         "delta_m": m, "delta_d": d, "rel_delta_m": m, "zero_rows": 0, "flags": ""})
    meta = {"runs": [{"label": run, "path": run, "checkpoints": [{"name": "c", "step": 10, "kind": kind}]}]}
    return Analysis(build_table(rows), meta)


def _correlated(n: int, rho: float, seed: int, scale: float = 1.0):
    """n points whose sample Pearson r is exactly ``rho``."""
    g = np.random.default_rng(seed)
    x = _z(g.normal(size=n))
    e = g.normal(size=n)
    e = _z(e - e.mean() - (e @ x) / n * x)
    y = rho * x + math.sqrt(1 - rho ** 2) * e
    return 1e-4 * scale * (x + 10), 1e-3 * scale * (y + 10)


def _z(v):
    return (v - v.mean()) / v.std()


def test_positive_coupling_says_dora_helps_with_pooled_stats():
    q, v = _correlated(24, 0.9, 0), _correlated(24, 0.8, 1, scale=30.0)
    (res,) = verdict(_analysis({"q_proj": q, "v_proj": v}))
    assert res["decision"] == "dora_likely_helps" and res["headline"].startswith("DoRA likely helps")
    # pooled r = Pearson on values z-scored within each module type (scales differ 30x)
    x = np.concatenate([_z(q[0]), _z(v[0])])
    y = np.concatenate([_z(q[1]), _z(v[1])])
    ref = sps.pearsonr(x, y)
    assert res["pooled"]["n"] == 48
    assert res["pooled"]["pearson_r"] == pytest.approx(ref.statistic, rel=1e-9)
    assert res["pooled"]["p_value"] == pytest.approx(ref.pvalue, rel=1e-6)
    lo, hi = ref.confidence_interval(0.95)
    assert (res["pooled"]["ci_low"], res["pooled"]["ci_high"]) == pytest.approx((lo, hi), rel=1e-6)
    q_mod = next(m for m in res["modules"] if m["module"] == "q_proj")
    assert q_mod["pearson_r"] == pytest.approx(sps.pearsonr(*q).statistic, rel=1e-9)
    assert res["thresholds"] == {"min_r": 0.3, "alpha": 0.05, "min_points": 6}
    assert set(res) == {"run", "kind", "decision", "headline", "reason", "thresholds", "pooled", "modules", "note"}


def test_negative_coupling_is_marginal():
    (res,) = verdict(_analysis({"q_proj": _correlated(20, -0.6, 2)}))
    assert res["decision"] == "marginal"
    assert res["pooled"]["pearson_r"] == pytest.approx(-0.6) and "marginal" in res["headline"]


@pytest.mark.parametrize("n, rho, kwargs, why", [
    (4, 0.9, {}, "too few points: n = 4 < 6"),
    (8, 0.9, {"min_r": 0.3, "alpha": 1e-6}, "≥ 1e-06"),
    (40, 0.15, {}, "between 0 and +0.30"),
    (30, 0.9, {"min_r": 0.99}, "between 0 and +0.99"),
])
def test_inconclusive_gives_the_reason(n, rho, kwargs, why):
    (res,) = verdict(_analysis({"q_proj": _correlated(n, rho, 3)}), **kwargs)
    assert res["decision"] == "inconclusive"
    assert why in res["reason"] and res["headline"].startswith("Inconclusive")


def test_constant_changes_are_inconclusive():
    dd = np.full(10, 1e-4)
    (res,) = verdict(_analysis({"q_proj": (dd, np.linspace(0, 1, 10))}))
    assert res["decision"] == "inconclusive" and "does not vary" in res["reason"]


def test_dora_run_says_so():
    (res,) = verdict(_analysis({"q_proj": _correlated(24, -0.5, 4)}, kind="dora"))
    assert res["kind"] == "dora" and res["headline"].startswith("[dora run]")
    assert "DoRA run" in res["note"] and "meant for LoRA" in res["note"]


def test_full_run_note():
    (res,) = verdict(_analysis({"q_proj": _correlated(24, -0.6, 6)}, kind="full"))
    assert res["decision"] == "marginal" and res["kind"] == "full" and "full fine-tuning run" in res["note"]


@pytest.mark.parametrize("kwargs", [{"min_r": 1.5}, {"alpha": 0}, {"min_points": 2}])
def test_bad_thresholds(kwargs):
    with pytest.raises(InputError):
        verdict(_analysis({"q_proj": _correlated(10, 0.5, 5)}), **kwargs)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_check_on_adapter_run_directory(tmp_path):
    """End to end: a run directory of PEFT adapter checkpoints; the JSON carries the verdict."""
    pytest.importorskip("peft")
    pytest.importorskip("transformers")
    from tiny_peft import save_lora_run

    base, run = save_lora_run(tmp_path)
    a = dora_diag.check(base, run, min_points=4)
    (res,) = a.meta["verdicts"]
    assert res["kind"] == "lora" and res["pooled"]["n"] == 18
    assert res["decision"] == "dora_likely_helps"  # B grows each checkpoint: ΔD and ΔM grow together
    stats = a.stats("module")
    pooled = stats[stats["module"] == "(pooled)"].iloc[0]
    assert res["pooled"]["pearson_r"] == pytest.approx(pooled["pearson_r"])
    doc = json.loads(a.to_json())
    assert doc["verdicts"][0]["decision"] == res["decision"] and doc["verdicts"][0]["thresholds"]["min_points"] == 4


def test_headlines_of_non_lora_runs_describe_the_pattern_not_lora():
    (apart,) = verdict(_analysis({"q_proj": _correlated(24, -0.6, 6)}, kind="full"))
    (together,) = verdict(_analysis({"q_proj": _correlated(24, 0.9, 6)}, kind="full"))
    assert apart["headline"].startswith("[full run] Magnitude and direction move apart")
    assert together["headline"].startswith("[full run] Magnitude and direction change together")
    assert "LoRA changes" not in together["headline"] and "LoRA already" not in apart["headline"]
