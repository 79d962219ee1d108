import math
import sys

import numpy as np
import pandas as pd
import pytest

from dora_diag.report.figures import FIGURES, make_figure, module_types

from .conftest import XSS, synthetic_analysis


def test_scatter_is_figure_2_with_runs_side_by_side(small_analysis):
    fig = small_analysis.figure("scatter", module="q_proj")
    points = [t for t in fig.data if t.mode == "markers"]
    assert [t.name for t in points] == ["FT", "LoRA"]
    table = small_analysis.table
    for t in points:
        rows = table[(table["run"] == t.name) & (table["module"] == "q_proj") & table["layer"].notna()]
        assert len(t.x) == len(rows) == 4 * 3   # one point per layer per checkpoint
        assert sorted(t.x) == sorted(rows["delta_d"])
        assert sorted(t.y) == sorted(rows["delta_m"])
        assert sorted(set(t.marker.color)) == [100, 200, 300]   # colour = step
    assert fig.layout.xaxis2.matches == "x" and fig.layout.yaxis2.matches == "y"   # shared axes


def test_scatter_title_and_ols_line_match_stats(small_analysis):
    fig = small_analysis.figure("scatter", module="k_proj", runs=["LoRA"])
    s = small_analysis.stats("module").set_index(["run", "module"]).loc[("LoRA", "k_proj")]
    title = fig.layout.annotations[0].text
    assert f"r = {s['pearson_r']:+.2f}" in title and f"n = {int(s['n'])}" in title
    assert f"[{s['ci_low']:+.2f}, {s['ci_high']:+.2f}]" in title
    line = next(t for t in fig.data if t.mode == "lines")
    np.testing.assert_allclose(line.y, s["intercept"] + s["slope"] * np.asarray(line.x))
    assert fig.layout.xaxis.tickformat.endswith("e")   # ΔD of 1e-6 must not read 0


def test_scatter_excludes_non_layer_and_nonfinite_tensors():
    a = synthetic_analysis(xss=True)
    for t in a.figure("scatter").data:
        assert all("embed" not in str(c) and "nonfinite" not in str(c)
                   for c in (t.customdata if t.customdata is not None else []))
    n = len(a.figure("scatter").data[0].x)
    assert n == 4 * 3   # the non-layer XSS tensor is flagged nonfinite and stays out


def test_names_from_checkpoints_are_text_in_figures():
    a = synthetic_analysis(xss=True)
    fig = a.figure("scatter", module=XSS)
    shown = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert fig.layout.title.text.startswith(shown)
    assert all(shown in c[0] for c in fig.data[0].customdata)
    assert "<script>" not in fig.to_json().replace("\\u003c", "<").replace(shown, "")
    heat = a.figure("heatmap")
    assert list(heat.data[0].y) == ["q_proj", "k_proj", shown]


def test_module_order_follows_the_transformer_block():
    a = synthetic_analysis(modules=("down_proj", "o_proj", "q_proj", "up_proj", "zeta", "alpha"))
    assert module_types(a) == ["q_proj", "o_proj", "up_proj", "down_proj", "alpha", "zeta"]


def test_steps_missing_colour_by_checkpoint_order():
    a = synthetic_analysis()
    a.table["step"] = pd.array([pd.NA] * len(a.table), dtype="Int64")
    fig = a.figure("scatter")
    assert sorted(set(fig.data[0].marker.color)) == [0, 1, 2]
    assert fig.layout.coloraxis.colorbar.title.text == "checkpoint #"


def test_undefined_fit_reads_na_and_draws_no_line():
    a = synthetic_analysis(layers=1, steps=(100, 200))   # n = 2 per run and module
    fig = a.figure("scatter", module="q_proj")
    assert "r = n/a" in fig.layout.annotations[0].text and "nan" not in fig.layout.annotations[0].text
    assert not [t for t in fig.data if t.mode == "lines"]


def test_profile_heatmap_trajectory_values(small_analysis):
    t = small_analysis.table
    last = t[(t["run"] == "LoRA") & (t["checkpoint"] == "final") & t["layer"].notna()]
    prof = small_analysis.figure("profile", run="LoRA")
    q_dm = next(tr for tr in prof.data if tr.name == "q_proj" and tr.xaxis == "x")
    assert list(q_dm.y) == list(last[last["module"] == "q_proj"].sort_values("layer")["delta_m"])
    heat = small_analysis.figure("heatmap", metric="delta_m", run="LoRA", checkpoint="checkpoint-100")
    at100 = t[(t["run"] == "LoRA") & (t["checkpoint"] == "checkpoint-100") & t["layer"].notna()]
    z = np.asarray(heat.data[0].z)
    assert z.shape == (2, 4) and list(heat.data[0].y) == ["q_proj", "k_proj"]
    assert z[1, 3] == at100[(at100["module"] == "k_proj") & (at100["layer"] == 3)]["delta_m"].item()
    traj = small_analysis.figure("trajectory")
    tr = next(x for x in traj.data if x.name == "FT · q_proj" and x.xaxis == "x2")
    ft = t[(t["run"] == "FT") & (t["module"] == "q_proj")]
    assert list(tr.x) == [100, 200, 300]
    assert math.isclose(tr.y[0], ft[ft["step"] == 100]["delta_d"].mean())


def test_training_curves_and_missing_log():
    a = synthetic_analysis()
    fig = a.figure("training")
    assert {t.name for t in fig.data} == {"FT · loss", "LoRA · loss"}
    a.meta["runs"][0]["log"] += [{"step": 300, "eval_loss": 1.0, "eval_accuracy": 0.5, "eval_runtime": 12.0,
                                   "eval_samples_per_second": 80.0, "epoch": 1.0}]
    assert {t.name for t in a.figure("training").data} == {"FT · loss", "FT · eval_loss", "FT · eval_accuracy",
                                                            "LoRA · loss"}
    with pytest.raises(ValueError, match="no run has a training log"):
        synthetic_analysis(logs=False).figure("training")


@pytest.mark.parametrize("kind, kwargs, match", [
    ("pie", {}, "choose one of"),
    ("scatter", {"module": "nope"}, r"choose one of \['q_proj', 'k_proj'\]"),
    ("scatter", {"runs": ["nope"]}, "unknown run"),
    ("heatmap", {"metric": "r"}, "unknown metric"),
    ("profile", {"checkpoint": "checkpoint-999"}, "unknown checkpoint"),
])
def test_bad_arguments_list_the_choices(small_analysis, kind, kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_analysis.figure(kind, **kwargs)


def test_every_kind_is_documented():
    text = sys.modules[make_figure.__module__].__doc__
    assert all(f'"{k}"' in text for k in FIGURES)


def test_partly_missing_steps_colour_every_point_by_checkpoint_order():
    a = synthetic_analysis()
    a.table.loc[a.table["checkpoint"] == "final", "step"] = pd.NA   # e.g. a root checkpoint without trainer_state
    fig = a.figure("scatter")
    assert sorted(set(fig.data[0].marker.color)) == [0, 1, 2]
    assert list(a.figure("trajectory").data[0].x) == [0, 1, 2]
