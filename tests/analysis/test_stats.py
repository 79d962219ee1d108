"""Correlation statistics against textbook formulas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dora_diag.analysis.analysis import Analysis
from dora_diag.analysis.stats import fit, fit_points, module_stats
from dora_diag.analysis.table import build_table
from dora_diag.records import Meta


def test_fit_matches_textbook_formulas():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = -0.6 * x + rng.normal(scale=0.5, size=30)
    out = fit(x, y)
    r = np.corrcoef(x, y)[0, 1]
    assert out["n"] == 30 and out["pearson_r"] == pytest.approx(r)
    z, se = math.atanh(r), 1 / math.sqrt(27)
    assert out["naive_ci_low"] == pytest.approx(math.tanh(z - 1.959964 * se), rel=1e-5)
    assert out["naive_ci_high"] == pytest.approx(math.tanh(z + 1.959964 * se), rel=1e-5)
    t = r * math.sqrt(28 / (1 - r * r))
    from scipy.stats import t as t_dist
    assert out["naive_p"] == pytest.approx(2 * t_dist.sf(abs(t), 28), rel=1e-6)
    slope = np.cov(x, y, ddof=1)[0, 1] / np.var(x, ddof=1)
    assert out["slope"] == pytest.approx(slope) and out["intercept"] == pytest.approx(y.mean() - slope * x.mean())
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert out["spearman_rho"] == pytest.approx(np.corrcoef(ranks(x), ranks(y))[0, 1])


@pytest.mark.parametrize("x,y", [([1.0, 2.0], [1.0, 3.0]), ([], []), ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]),
                                 ([1.0, float("nan"), 2.0], [1.0, 2.0, float("nan")])])
def test_too_few_or_degenerate_points_give_nan_not_exceptions(x, y):
    out = fit(np.array(x), np.array(y))
    assert math.isnan(out["pearson_r"]) and math.isnan(out["slope"])


def _table(points: dict[str, list[tuple[float, float]]]) -> pd.DataFrame:
    rows = []
    for module, pts in points.items():
        for layer, (dd, dm) in enumerate(pts):
            rows.append({"run": "FT", "step": 1, "checkpoint": "c", "tensor": f"layers.{layer}.{module}.weight",
                         "layer": layer, "module": module, "group": "", "rows": 4, "cols": 4, "dtype": "F32",
                         "delta_m": dm, "delta_d": dd, "rel_delta_m": dm, "zero_rows": 0, "flags": ""})
    return build_table(rows)


def test_pooling_standardizes_within_module_types():
    # Inside each module ΔM falls as ΔD grows, but the MLP sits at a much larger scale, so raw
    # pooling would report a strong positive correlation. The standardized pool keeps the sign.
    q = [(1e-6 * i, 1e-3 - 1e-5 * i) for i in range(1, 6)]
    mlp = [(1e-3 * i, 1.0 - 1e-2 * i) for i in range(1, 6)]
    table = _table({"q_proj": q, "down_proj": mlp})
    raw = fit(table["delta_d"].to_numpy(), table["delta_m"].to_numpy())
    assert raw["pearson_r"] > 0.5
    pooled = module_stats(fit_points(table), {}, ["FT"]).iloc[-1]
    assert pooled["module"] == "(pooled)" and pooled["n"] == 10 and pooled["units"] == 5
    assert pooled["pearson_r"] == pytest.approx(-1.0)


def test_analysis_stats_views():
    table = _table({"q_proj": [(1e-6 * i, 2e-3 * i) for i in range(1, 6)], "v_proj": [(2e-6 * i, 1e-3 * i) for i in range(1, 6)]})
    a = Analysis(table, Meta.from_json({"runs": [{"label": "FT", "method": "ft"}]}))
    by_module = a.stats("module")
    assert by_module["module"].tolist() == ["q_proj", "v_proj", "(pooled)"]
    assert by_module["method"].tolist() == ["ft"] * 3
    assert a.stats("module") is not a.stats("module")  # copies of one computation
    assert a._stats["module"] is not None
    assert by_module["pearson_r"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert a.stats("run")["n"].tolist() == [10]
    assert a.stats("layer")["n"].tolist() == [2] * 5
    with pytest.raises(ValueError, match="by must be"):
        a.stats("tensor")


def test_statistics_are_computed_once_per_analysis(monkeypatch):
    """JSON, HTML report and notebook calls share one computation of the fits."""
    from dora_diag.analysis import analysis as analysis_module

    calls = []
    real = analysis_module.module_stats
    monkeypatch.setattr(analysis_module, "module_stats", lambda *a: calls.append(1) or real(*a))
    table = _table({"q_proj": [(1e-6 * i, 2e-3 * i + 1e-4 * (i % 2)) for i in range(1, 8)],
                    "v_proj": [(2e-6 * i, 1e-3 * i - 1e-4 * (i % 3)) for i in range(1, 8)]})
    a = Analysis(table, Meta.from_json({"runs": [{"label": "FT", "method": "ft", "path": "ft",
                                                  "checkpoints": [{"name": "c", "step": 1, "path": "ft", "kind": "full"}]}]}))
    a.to_json()
    a.to_html()
    a.stats("module"), a.stats("run")
    a.figure("scatter", module="q_proj")
    assert len(calls) == 1


def test_by_expert_view_fits_each_expert_apart():
    rows = []
    for expert in range(3):
        for layer in range(4):
            dd = 1e-6 * (layer + 1) * (expert + 1)
            rows.append({"run": "FT", "step": 1, "checkpoint": "c", "tensor": f"layers.{layer}.experts.{expert}.w1.weight",
                         "layer": layer, "module": "experts.w1", "expert": expert, "group": "", "rows": 4, "cols": 4,
                         "dtype": "F32", "delta_m": 3e-3 * (layer + 1) + 1e-4 * expert * layer ** 2, "delta_d": dd,
                         "rel_delta_m": 0.0, "zero_rows": 0, "flags": ""})
    a = Analysis(build_table(rows), Meta.from_json({"runs": [{"label": "FT", "method": "ft"}]}))
    by_expert = a.stats("expert")
    assert by_expert["expert"].tolist() == [0, 1, 2] and by_expert["n"].tolist() == [4, 4, 4]
    for e, row in by_expert.set_index("expert").iterrows():
        g = a.table[a.table["expert"] == e]
        assert row["pearson_r"] == pytest.approx(fit(g["delta_d"].to_numpy(), g["delta_m"].to_numpy())["pearson_r"])
    assert a.stats("module")["n"].tolist() == [12, 12]   # pooled within the module type by default
    assert "by_expert" in a.summary()["stats"]
    assert "by_expert" not in Analysis(_table({"q_proj": [(1e-6, 1e-3)] * 3}), Meta.from_json({"runs": [{"label": "FT"}]})).summary()["stats"]


def test_outputs_written_to_a_path_return_none_like_pandas(tmp_path):
    a = Analysis(_table({"q_proj": [(1e-6 * i, 2e-3 * i) for i in range(1, 6)]}), Meta.from_json({"runs": [{"label": "FT"}]}))
    assert a.to_csv(tmp_path / "t.csv") is None and (tmp_path / "t.csv").read_text() == a.to_csv()
    assert a.to_json(tmp_path / "s.json") is None and (tmp_path / "s.json").read_text() == a.to_json()


def test_derived_analyses_share_the_statistics_while_the_runs_stay(monkeypatch):
    """``check`` and the demo attach verdicts or a temporary directory to a new Analysis: the fits
    are not recomputed for it, unless the runs' methods (which the statistics record) change."""
    from dora_diag.analysis import analysis as analysis_module

    calls = []
    real = analysis_module.module_stats
    monkeypatch.setattr(analysis_module, "module_stats", lambda *a: calls.append(1) or real(*a))
    a = Analysis(_table({"q_proj": [(1e-6 * i, 2e-3 * i + 1e-4 * (i % 2)) for i in range(1, 8)]}),
                 Meta.from_json({"runs": [{"label": "FT", "method": "ft"}]}))
    a.stats()
    b = a.with_verdicts([]).with_meta(a.meta.with_temporary_dirs("tmp"))
    assert b.verdicts == () and a.verdicts is None and b.meta.temporary_dirs == ("tmp",)
    assert b.stats().equals(a.stats()) and len(calls) == 1
    relabelled = a.with_meta(Meta.from_json({"runs": [{"label": "FT", "method": "lora"}]}))
    assert relabelled.stats()["method"].tolist() == ["lora", "lora"] and len(calls) == 2


def test_meta_is_a_typed_record():
    with pytest.raises(TypeError, match="records.Meta"):
        Analysis(_table({"q_proj": [(1e-6, 1e-3)] * 3}), {"runs": [{"label": "FT"}]})
