"""The "will DoRA help?" verdict: method-aware, layer-level, detrended, with relative evidence and trials."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dora_diag
from dora_diag.analysis.analysis import Analysis
from dora_diag.analysis.table import build_table
from dora_diag.analysis.verdict import decide, judge_trial, verdict
from dora_diag.errors import InputError
from dora_diag.io.method import LORA_FAMILY, METHODS
from dora_diag.records import Meta

TH = {"min_r": 0.3, "alpha": 0.05, "min_units": 6}


def _rows(run: str, f, layers: int, ckpts: int, modules=("q_proj", "v_proj"), seed: int = 0) -> list[dict]:
    g = np.random.default_rng(seed)
    rows = []
    for c in range(ckpts):
        for m in modules:
            for layer in range(layers):
                dd, dm = f(g, layer, c)
                rows.append({"run": run, "step": c + 1, "checkpoint": f"c{c}", "tensor": f"l.{layer}.{m}.weight",
                             "layer": layer, "module": m, "group": "", "rows": 4, "cols": 4, "dtype": "F32",
                             "delta_m": dm, "delta_d": dd, "rel_delta_m": dm, "zero_rows": 0, "flags": ""})
    return rows


def _analysis(runs: dict[str, tuple[str, object]], layers: int = 10, ckpts: int = 3) -> Analysis:
    """``runs[label] = (method, f)`` with ``f(rng, layer, ckpt) -> (ΔD, ΔM)``."""
    rows = [r for i, (label, (_, f)) in enumerate(runs.items()) for r in _rows(label, f, layers, ckpts, seed=i)]
    methods = {label: m for label, (m, _) in runs.items()}
    meta = {"runs": [{"label": label, "path": label, "method": m, "checkpoints": []} for label, m in methods.items()]}
    return Analysis(build_table(rows, methods), Meta.from_json(meta))


def coupled(g, layer, c):
    e = g.normal()
    return 1e-4 * (5 + e + 0.2 * g.normal()), 1e-3 * (5 + e + 0.2 * g.normal())


def apart(g, layer, c):
    e = g.normal()
    return 1e-4 * (5 + e + 0.2 * g.normal()), 1e-3 * (5 - e + 0.2 * g.normal())


def step_trend_only(g, layer, c):
    return 1e-4 * (c + 1) * (1 + 0.1 * g.normal()), 1e-3 * (c + 1) * (1 + 0.1 * g.normal())


def test_coupled_lora_run_says_dora_likely_helps():
    (v,) = verdict(_analysis({"LoRA": ("lora", coupled)}))
    assert v.decision == "dora_likely_helps" and v.decided_by == "heuristic" and v.method == "lora"
    assert v.headline.startswith("The coupling heuristic says DoRA may help (unproven") and v.statistic == "partial_r"
    assert "not shown to predict" in v.note and "reports/verdict-calibration.md" in v.note
    assert v.pooled["units"] == 10 and v.pooled["n"] == 60 and v.pooled["partial_r"] > 0.8
    assert v.pooled["partial_p"] < 0.05 and "layer" in v.ci_method and "layer" in v.p_method
    assert {m["module"] for m in v.modules} == {"q_proj", "v_proj"}
    assert v.relative == () and v.trial is None


def test_decoupled_lora_run_is_marginal():
    (v,) = verdict(_analysis({"LoRA": ("rslora", apart)}))
    assert v.decision == "marginal" and v.pooled["partial_r"] < -0.8 and "marginal" in v.headline


def test_shared_step_trend_is_not_evidence():
    """The paper's r is ~+1 from the step trend alone; the decision statistic is not fooled."""
    (v,) = verdict(_analysis({"LoRA": ("lora", step_trend_only)}, layers=12, ckpts=5))
    assert v.pooled["pearson_r"] > 0.9 and v.pooled["naive_p"] < 1e-10
    assert v.decision == "inconclusive" and "not distinguishable from no coupling" in v.reason


def test_too_few_layers_is_inconclusive_however_many_points():
    (v,) = verdict(_analysis({"LoRA": ("lora", coupled)}, layers=4, ckpts=20))
    assert v.pooled["n"] == 160 and v.pooled["units"] == 4
    assert v.decision == "inconclusive" and "too few layers: 4 independent layers < 6" in v.reason


@pytest.mark.parametrize("method", [m for m in METHODS if m not in LORA_FAMILY])
@pytest.mark.parametrize("pattern", [coupled, apart])
def test_full_and_dora_runs_never_get_advice(method, pattern):
    (v,) = verdict(_analysis({"R": (method, pattern)}))
    assert v.decision == "not_applicable" and v.decided_by == "none"
    assert "DoRA likely helps" not in v.headline and "marginal" not in v.headline
    word = "together" if pattern is coupled else "apart"
    assert word in v.headline


def test_relative_evidence_against_ft_and_dora_runs():
    a = _analysis({"LoRA": ("lora", coupled), "FT": ("ft", apart), "DoRA": ("dora", apart)})
    lora, ft, dora = verdict(a)
    assert [r["versus"] for r in lora.relative] == ["FT", "DoRA"]
    rel = lora.relative[0]
    assert rel["method"] == "ft" and rel["units"] == 10 and rel["statistic"] == "partial_r"
    assert rel["difference"] == pytest.approx(rel["value"] - rel["reference"])
    assert rel["value"] == pytest.approx(lora.pooled["partial_r"]) and rel["reference"] == pytest.approx(
        ft.pooled["partial_r"])
    assert rel["ci_low"] > 1.0 and "LoRA couples more than FT (full fine-tuning)" in lora.reason
    assert ft.relative == () and dora.decision == "not_applicable"


def _trial(per_seed, steps=50):
    return {"settings": {"steps": steps}, "runs": [],
            "difference": {"metric": "eval_loss", "per_seed": list(per_seed), "seeds": len(per_seed)}}


@pytest.mark.parametrize("per_seed, decision", [
    ([-0.10, -0.12, -0.11], "dora_likely_helps"),
    ([0.10, 0.12, 0.11], "marginal"),
    ([-0.10, 0.12], "inconclusive"),
    ([-0.1], "inconclusive"),
])
def test_trial_judged_by_its_interval(per_seed, decision):
    got, text = judge_trial(_trial(per_seed), 0.05)
    assert got == decision and f"{len(per_seed)} seed" in text


def test_trial_decides_when_conclusive_and_heuristic_stays_otherwise():
    a = _analysis({"LoRA": ("lora", coupled)})
    (v,) = verdict(a, trials={"LoRA": _trial([0.2, 0.21, 0.19])})
    assert v.decision == "marginal" and v.decided_by == "trial"
    assert v.headline.startswith("DoRA did not help in the matched trial") and v.trial["settings"]["steps"] == 50
    (v,) = verdict(a, trials={"LoRA": _trial([-0.1, 0.1])})
    assert v.decision == "dora_likely_helps" and v.decided_by == "heuristic" and "within seed noise" in v.reason


@pytest.mark.parametrize("kwargs", [{"min_r": 1.5}, {"alpha": 0}, {"min_units": 2}])
def test_bad_thresholds(kwargs):
    with pytest.raises(InputError):
        verdict(_analysis({"R": ("lora", coupled)}), **kwargs)


finite = st.floats(-1, 1, allow_nan=False)
maybe = st.one_of(finite, st.just(math.nan))


@st.composite
def stats_dicts(draw):
    r = draw(maybe)
    lo = draw(finite) if not math.isnan(r) else math.nan
    hi = draw(finite) if not math.isnan(r) else math.nan
    return {"n": draw(st.integers(0, 500)), "units": draw(st.integers(0, 40)), "checkpoints": 2,
            "partial_r": r, "partial_ci_low": min(lo, hi), "partial_ci_high": max(lo, hi),
            "partial_p": draw(st.floats(1e-4, 1)) if not math.isnan(r) else math.nan,
            "pearson_r": draw(maybe)}


def _numbers(text: str) -> list[str]:
    return re.findall(r"partial r = ([+-]\d\.\d\d|n/a)", text)


@settings(max_examples=300, deadline=None)
@given(s=stats_dicts(), method=st.sampled_from(METHODS))
def test_card_texts_never_contradict_their_numbers(s, method):
    out = decide(s, method, TH)
    text = out["headline"] + " " + out["reason"]
    r, p = s["partial_r"], s["partial_p"]
    for shown in _numbers(text):
        assert shown == ("n/a" if math.isnan(r) else f"{r:+.2f}")
    if out["decision"] == "dora_likely_helps":
        assert method in LORA_FAMILY and s["units"] >= 6 and r > 0.3 and p < 0.05
    if out["decision"] == "marginal":
        assert method in LORA_FAMILY and s["units"] >= 6 and r < 0 and p < 0.05
    if method not in LORA_FAMILY:
        assert out["decision"] == "not_applicable"
        assert "DoRA likely helps" not in text and "switch" not in text
    if "change together" in text or "couples magnitude and direction" in text:
        assert r > 0
    if "move apart" in text or "moves them apart" in text:
        assert r < 0
    if "too few layers" in text:
        assert s["units"] < 6 and out["decision"] in ("inconclusive", "not_applicable")
    if "no clear coupling" in text:
        assert s["units"] >= 6 and (math.isnan(p) or p >= 0.05 or r == 0)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_check_json_carries_the_decision_fields(tmp_path):
    """End to end: a run directory of PEFT LoRA checkpoints and a DoRA run on the same base."""
    pytest.importorskip("peft")
    from tiny_peft import save_lora_run

    base, run = save_lora_run(tmp_path / "lora", layers=6)
    _, dora = save_lora_run(tmp_path / "dora", layers=6, use_dora=True)
    a = dora_diag.check(base, f"LoRA={run}", f"DoRA={dora}")
    lora_v, dora_v = a.verdicts
    assert lora_v.method == "lora" and dora_v.method == "dora" and dora_v.decision == "not_applicable"
    assert lora_v.pooled["units"] == 6 and lora_v.pooled["n"] == 36
    assert [r["versus"] for r in lora_v.relative] == ["DoRA"]
    doc = json.loads(a.to_json())
    assert [v["decision"] for v in doc["verdicts"]] == [lora_v.decision, "not_applicable"]
    assert doc["runs"][0]["method"] == "lora" and doc["runs"][0]["method_evidence"] == "adapter_config.json and weights"
    row = doc["stats"]["by_module"][0]
    for key in ("method", "pearson_r", "within_checkpoint_r", "partial_r", "ci_method", "p_method", "units",
                "naive_p", "partial_ci_low", "partial_p"):
        assert key in row
    assert set(a.table["method"]) == {"lora", "dora"}
    with pytest.raises(InputError, match="min_units"):
        dora_diag.check(base, run, min_units=1)
