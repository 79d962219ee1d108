import math
import sys

import numpy as np
import pandas as pd
import pytest

from dora_diag.report.figures import FIGURES, make_figure, module_types
from dora_diag.report.format import fmt_p, stat
from dora_diag.report.trajectory import final_evals

from .conftest import MODULES, XSS, synthetic_analysis, with_log


def _points(fig):
    return [t for t in fig.data if t.mode == "markers" and not str(t.legendgroup or "").startswith("size-")]


def test_scatter_is_figure_2_with_runs_side_by_side(small_analysis):
    fig = small_analysis.figure("scatter", module="q_proj")
    points = _points(fig)
    assert [t.name for t in points] == ["FT", "LoRA"]
    table = small_analysis.table
    for t in points:
        rows = table[(table["run"] == t.name) & (table["module"] == "q_proj") & table["layer"].notna()]
        assert len(t.x) == len(rows) == 4 * 3   # one point per layer per checkpoint
        assert sorted(t.x) == sorted(rows["delta_d"])
        assert sorted(t.y) == sorted(rows["delta_m"])
        assert sorted(set(t.marker.color)) == [0, 1, 2, 3]   # colour = layer
        assert len(set(np.round(t.marker.size, 6))) == 3   # size = step: one size per checkpoint
        by_step = dict(zip(rows.sort_values(["layer", "step"])["delta_d"], rows.sort_values(["layer", "step"])["step"]))
        size_of = dict(zip(t.x, t.marker.size))
        assert size_of[min(by_step, key=lambda x: (by_step[x], x))] < size_of[max(by_step, key=lambda x: (by_step[x], x))]
    assert fig.layout.coloraxis.colorbar.title.text.endswith("layer")
    assert fig.layout.xaxis2.matches is None and fig.layout.yaxis2.matches is None   # each panel its own axes
    shared = small_analysis.figure("scatter", module="q_proj", shared_axes=True)
    assert shared.layout.xaxis2.matches == "x" and shared.layout.yaxis2.matches == "y"


def test_scatter_colour_by_step_and_toggle_buttons(small_analysis):
    fig = small_analysis.figure("scatter", color="step")
    assert all(sorted(set(t.marker.color)) == [100, 200, 300] for t in _points(fig))
    assert fig.layout.coloraxis.colorbar.title.text.endswith("step")
    layer, step = fig.layout.updatemenus[0].buttons
    assert layer.label == "colour = layer" and step.label == "colour = step"
    first = [i for i, t in enumerate(fig.data) if t.mode == "markers"][0]
    colours = dict(zip(layer.args[2], layer.args[0]["marker.color"]))
    assert sorted(set(colours[first])) == [0, 1, 2, 3]
    assert list(dict(zip(step.args[2], step.args[0]["marker.color"]))[first]) == list(fig.data[first].marker.color)
    assert layer.args[1]["coloraxis.colorbar"]["title"]["text"].endswith("layer")


def test_scatter_legend_has_fit_line_and_size_key(small_analysis):
    fig = small_analysis.figure("scatter")
    shown = [t.name for t in fig.data if t.showlegend is not False and t.visible is not False]
    assert shown[0].startswith("OLS fit") and shown.count(shown[0]) == 1
    assert shown[1:] == ["size: step 100", "200", "300"]


def test_scatter_ticks_are_readable():
    a = synthetic_analysis()
    fig = a.figure("scatter")
    assert fig.layout.xaxis.exponentformat == "power"   # ΔD ~ 1e-4: 2×10⁻⁴, not 0.0002 or 2.00e-4
    assert fig.layout.yaxis.tickformat == "~g" and fig.layout.yaxis.exponentformat == "none"   # ΔM ~ 0.3: 0.3
    assert fig.layout.annotations[0].font.size >= 14   # panel titles at body-text size


def test_tick_style_by_range():
    from dora_diag.report.common import tick_style

    assert tick_style([0.05, 0.8])["tickformat"] == "~g"
    assert tick_style([1e-9, 2e-6])["exponentformat"] == "power"
    assert tick_style([np.nan, 0.0])["exponentformat"] == "none"


def test_scatter_title_and_ols_line_match_stats(small_analysis):
    fig = small_analysis.figure("scatter", module="k_proj", runs=["LoRA"])
    s = small_analysis.stats("module").set_index(["run", "module"]).loc[("LoRA", "k_proj")]
    title = fig.layout.annotations[0].text
    assert f"r = {s['pearson_r']:+.2f}" in title and f"n = {int(s['n'])}" in title
    assert f"[{stat(s, 'ci_low'):+.2f}, {stat(s, 'ci_high'):+.2f}]" in title
    assert f"p = {fmt_p(stat(s, 'p'))}" in title
    line = next(t for t in fig.data if t.mode == "lines")
    np.testing.assert_allclose(line.y, s["intercept"] + s["slope"] * np.asarray(line.x))


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
    assert sorted(set(fig.data[0].marker.color)) == [0, 1, 2, 3]   # layers
    assert a.figure("scatter", color="step").layout.coloraxis.colorbar.title.text.endswith("checkpoint #")
    assert sorted(set(a.figure("scatter", color="step").data[0].marker.color)) == [0, 1, 2]


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
    tr = next(x for x in traj.data if x.name == "q_proj" and x.xaxis == "x2")   # row 1 = FT, right = ΔD
    ft = t[(t["run"] == "FT") & (t["module"] == "q_proj")]
    assert list(tr.x) == [100, 200, 300]
    assert math.isclose(tr.y[0], ft[ft["step"] == 100]["delta_d"].mean())


def test_trajectory_is_small_multiples_with_one_short_legend():
    a = synthetic_analysis(modules=MODULES, runs=("FT", "LoRA", "DoRA"))
    fig = a.figure("trajectory")
    titles = [x.text for x in fig.layout.annotations]
    assert titles[::2] == ["FT: mean ΔM over layers", "LoRA: mean ΔM over layers", "DoRA: mean ΔM over layers"]
    assert [t.name for t in fig.data if t.showlegend] == list(MODULES)   # 7 entries, not 21 x 2
    styles = {(t.name, t.line.dash, t.marker.symbol) for t in fig.data}
    assert len(styles) == len(MODULES)   # a module keeps one style in every panel, each module its own


def test_heatmaps_share_one_colour_scale_across_runs():
    a = synthetic_analysis(runs=("FT", "LoRA", "DoRA"))
    for metric in ("delta_d", "delta_m"):
        heats = [a.figure("heatmap", metric=metric, run=r).data[0] for r in ("FT", "LoRA", "DoRA")]
        assert len({(h.zmin, h.zmax) for h in heats}) == 1
        values = a.table[a.table["layer"].notna()][metric]
        assert heats[0].zmin == values.min() and heats[0].zmax == values.max()
    own = [a.figure("heatmap", run=r, scale="run").data[0] for r in ("FT", "LoRA")]
    assert own[0].zmax == np.nanmax(own[0].z) and own[0].zmax != own[1].zmax
    assert "the same in every run" in a.figure("heatmap").layout.title.text


def test_profile_legend_does_not_scroll_and_lines_differ():
    a = synthetic_analysis(modules=MODULES)
    fig = a.figure("profile")
    assert fig.layout.legend.orientation == "h"
    assert len({(t.line.dash, t.marker.symbol, t.line.color) for t in fig.data}) == len(MODULES)


def test_training_curves_and_missing_log():
    a = synthetic_analysis()
    fig = a.figure("training")
    assert {t.name for t in fig.data} == {"FT · loss", "LoRA · loss"}
    a = with_log(a, 0, [{"step": 300, "eval_loss": 1.0, "eval_accuracy": 0.5, "eval_runtime": 12.0,
                         "eval_samples_per_second": 80.0, "epoch": 1.0}])
    fig = a.figure("training")
    assert {t.name for t in fig.data} == {"FT · loss", "FT · eval_loss", "FT · eval_accuracy", "LoRA · loss"}
    axis = {t.name: t.yaxis for t in fig.data}
    assert axis["FT · loss"] == axis["FT · eval_loss"] == "y" and axis["FT · eval_accuracy"] == "y2"
    assert fig.layout.yaxis.title.text == "loss" and list(fig.layout.yaxis2.range) == [0, 1.02]
    assert final_evals(a) == [{"run": "FT", "eval_loss": (300, 1.0), "eval_accuracy": (300, 0.5)}]
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
    fig = a.figure("scatter", color="step")
    assert sorted(set(fig.data[0].marker.color)) == [0, 1, 2]
    assert list(a.figure("trajectory").data[0].x) == [0, 1, 2]


@pytest.mark.parametrize("kind", ["profile", "trajectory"])
def test_module_selector_shows_one_module_at_a_time(kind):
    a = synthetic_analysis(modules=MODULES[:3])
    fig = a.figure(kind)
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["all module types", *MODULES[:3]]
    assert all(buttons[0].args[0]["visible"])
    shown = [t.legendgroup for t, v in zip(fig.data, buttons[2].args[0]["visible"]) if v]
    assert shown and set(shown) == {"k_proj"}
