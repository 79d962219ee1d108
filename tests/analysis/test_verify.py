"""``verify``: correct merges (by PEFT, diffusers, LyCORIS) pass; each kind of broken merge is caught
and named. Broken merges are built from the LyCORIS file's own tensors with the textbook formula."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

import dora_diag

pytestmark = pytest.mark.filterwarnings("ignore")
pytest.importorskip("lycoris")
from tiny_lycoris import make_case  # noqa: E402
from tiny_peft import save_adapter_case  # noqa: E402

LINEAR = "layers.0.q_proj.weight"      # (10, 12), r = 4, alpha = 2: scale 0.5
CONV = "layers.0.conv.weight"          # (6, 4, 3, 3), r = 3, alpha = 6: scale 2
SQUARE = "layers.1.v_proj.weight"      # (12, 12)


def _factors(adapter: dict, name: str) -> tuple[torch.Tensor, float]:
    """up @ down of module ``name`` (base tensor name) and its alpha / r, in float64."""
    key = "lycoris_" + name.removesuffix(".weight").replace(".", "_")
    up, down = adapter[f"{key}.lora_up.weight"].double(), adapter[f"{key}.lora_down.weight"].double()
    delta = (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])
    return delta, float(adapter[f"{key}.alpha"]) / down.shape[0]


def _broken(case, tmp_path, **replaced) -> str:
    """The correct merge with some tensors replaced."""
    tensors = {**load_file(case.merged), **{k: v.float().contiguous() for k, v in replaced.items()}}
    path = tmp_path / "broken.safetensors"
    save_file(tensors, str(path))
    return str(path)


def _status(result, name: str) -> dict:
    return next(r for r in result.records if r["tensor"] == name)


@pytest.fixture
def lora(tmp_path):
    return make_case(tmp_path)


@pytest.fixture
def dora(tmp_path):
    return make_case(tmp_path, dora_wd=True)


@pytest.mark.parametrize("kwargs", [{}, {"dora_wd": True}, {"dora_wd": True, "wd_on_output": False}])
def test_lycoris_own_merge_is_ok(tmp_path, kwargs):
    case = make_case(tmp_path, **kwargs)
    result = dora_diag.verify(case.base, case.merged, case.adapter)
    assert result.ok, result.problems
    assert sum(r["status"] == "ok" and r["adapted"] for r in result.records) >= 6


def test_peft_merge_and_unload_is_ok(tmp_path):
    pytest.importorskip("peft")
    case = save_adapter_case(tmp_path, "llama", r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj"])
    result = dora_diag.verify(case.base, case.merged, case.adapter)
    assert result.ok, result.problems
    assert sum(r["adapted"] for r in result.records) == 4


def test_a_bf16_merge_is_ok_within_its_rounding(lora, tmp_path):
    tensors = {k: v.bfloat16() for k, v in load_file(lora.merged).items()}
    path = tmp_path / "bf16.safetensors"
    save_file(tensors, str(path))
    assert dora_diag.verify(lora.base, path, lora.adapter).ok


def test_modules_left_at_the_base_are_unchanged(lora, tmp_path):
    base = load_file(lora.base)
    result = dora_diag.verify(lora.base, _broken(lora, tmp_path, **{LINEAR: base[LINEAR]}), lora.adapter)
    assert not result.ok
    assert _status(result, LINEAR)["status"] == "unchanged"
    assert [p.split(":")[1].strip() for p in result.problems] == [LINEAR]


def test_a_merge_identical_to_the_base_without_adapter(lora):
    result = dora_diag.verify(lora.base, lora.base)
    assert not result.ok and "nothing was merged" in result.problems[0]
    assert dora_diag.verify(lora.base, lora.merged).ok


def test_dora_merged_as_lora_is_a_dropped_magnitude(dora, tmp_path):
    base, adapter = load_file(dora.base), load_file(dora.adapter)
    delta, scale = _factors(adapter, LINEAR)
    as_lora = base[LINEAR].double() + scale * delta
    result = dora_diag.verify(dora.base, _broken(dora, tmp_path, **{LINEAR: as_lora}), dora.adapter)
    record = _status(result, LINEAR)
    assert record["status"] == "mismatch" and "DoRA magnitude was dropped" in record["detail"]


def _rescaled(case, tmp_path, name: str, factor: float) -> dict:
    """The verify record of ``name`` merged as W0 + factor·scale·up@down."""
    base, adapter = load_file(case.base), load_file(case.adapter)
    delta, scale = _factors(adapter, name)
    broken = _broken(case, tmp_path, **{name: base[name].double() + factor * scale * delta})
    return _status(dora_diag.verify(case.base, broken, case.adapter), name)


def test_forgotten_scale_is_named(lora, tmp_path):
    record = _rescaled(lora, tmp_path, CONV, 1 / 2)
    assert record["status"] == "mismatch"
    assert record["detail"] == "the merge applied the adapter's change x0.5: the scale alpha/r = 2 was not applied"


def test_rslora_confusion_is_named(lora, tmp_path):
    record = _rescaled(lora, tmp_path, CONV, math.sqrt(3))
    assert record["detail"].endswith(": alpha/sqrt(r) used instead of alpha/r (r = 3)")


def test_every_explanation_that_fits_is_given(lora, tmp_path):
    """r = 4, alpha/r = 0.5: x2 is the forgotten scale, the rsLoRA confusion, or a double merge."""
    detail = _rescaled(lora, tmp_path, LINEAR, 2)["detail"]
    assert all(reason in detail for reason in ("alpha/r = 0.5 was not applied", "alpha/sqrt(r) used", "twice"))


def test_transposed_tensors_are_named(lora, tmp_path):
    merged = load_file(lora.merged)
    broken = _broken(lora, tmp_path, **{SQUARE: merged[SQUARE].T, LINEAR: merged[LINEAR].T})
    result = dora_diag.verify(lora.base, broken, lora.adapter)
    assert _status(result, SQUARE)["detail"] == "stored transposed"
    assert _status(result, LINEAR)["detail"].startswith("stored transposed: [12, 10]")


def test_other_tensors_must_stay_at_the_base(lora, tmp_path):
    base = load_file(lora.base)
    bias = "layers.0.q_proj.bias"
    result = dora_diag.verify(lora.base, _broken(lora, tmp_path, **{bias: base[bias] + 1}), lora.adapter)
    record = _status(result, bias)
    assert record["status"] == "mismatch" and "does not touch" in record["detail"]


def test_missing_and_leftover_tensors(lora, tmp_path):
    tensors = load_file(lora.merged)
    del tensors[LINEAR]
    tensors["layers.0.q_proj.lora_A.weight"] = torch.zeros(4, 12)
    path = tmp_path / "partial.safetensors"
    save_file(tensors, str(path))
    result = dora_diag.verify(lora.base, path, lora.adapter)
    assert _status(result, LINEAR)["status"] == "missing"
    assert _status(result, "layers.0.q_proj.lora_A.weight")["status"] == "extra"


def test_an_all_zero_adapter_is_reported(tmp_path):
    case = make_case(tmp_path)
    tensors = {k: (torch.zeros_like(v) if "lora_up" in k else v) for k, v in load_file(case.adapter).items()}
    save_file(tensors, str(case.adapter))
    result = dora_diag.verify(case.base, case.base, case.adapter)
    assert result.problems == ["the adapter changes no tensor: every update is zero"]


def test_diffusers_fuse_of_a_pipeline_is_ok_and_a_dropped_component_is_not(tmp_path):
    pytest.importorskip("diffusers")
    import shutil

    import tiny_diffusers

    case = tiny_diffusers.make_case(tmp_path, use_dora=True)
    assert dora_diag.verify(case.base, case.merged, case.lora).ok
    shutil.rmtree(case.merged / "text_encoder")
    shutil.copytree(case.base / "text_encoder", case.merged / "text_encoder")
    result = dora_diag.verify(case.base, case.merged, case.lora)
    dropped = {r["tensor"].split(".")[0] for r in result.records if r["status"] == "unchanged"}
    assert dropped == {"text_encoder"} and len(result.problems) == 4   # q and v of 2 layers


def test_non_finite_values_are_a_mismatch_not_a_nan(lora, tmp_path):
    merged = load_file(lora.merged)
    merged[LINEAR][0, 0] = float("nan")
    result = dora_diag.verify(lora.base, _broken(lora, tmp_path, **{LINEAR: merged[LINEAR]}), lora.adapter)
    record = _status(result, LINEAR)
    assert record["status"] == "mismatch" and "NaN" in record["detail"] and record["rel_deviation"] is None
