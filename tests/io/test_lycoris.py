"""LyCORIS/kohya files: effective weights must equal LyCORIS's own merge_to() (lycoris-lora 4.1.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import dora_diag

pytest.importorskip("lycoris")
from tiny_lycoris import make_case  # noqa: E402
from dora_diag.errors import InputError
from dora_diag.io.checkpoint import open_checkpoint
from dora_diag.io.kohya_names import FlatIndex
from dora_diag.io.adapter_formats import is_lycoris_file
from dora_diag.io.lycoris import LycorisSource
from dora_diag.io.safetensors_file import read_header
from dora_diag.io.sources import open_source

pytestmark = pytest.mark.filterwarnings("ignore")

CASES = {
    "lora": {},
    "dora_output_axis": {"dora_wd": True, "wd_on_output": True},
    "dora_input_axis": {"dora_wd": True, "wd_on_output": False},
    "tucker": {"use_tucker": True},
    "tucker_dora": {"use_tucker": True, "dora_wd": True},
}


def _effective(source, base: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    w = base[name]
    return source.rows(name, w, 0, w.shape[0]).reshape(w.shape).double()


def _relative_error(ours: torch.Tensor, merged: torch.Tensor, base: torch.Tensor) -> float:
    """‖ours - merged‖ relative to the change the merge made (the part a wrong scale would spoil)."""
    return float((ours - merged.double()).norm() / (merged.double() - base.double()).norm())


@pytest.mark.parametrize("name", list(CASES))
def test_rows_equal_lycoris_merge(tmp_path, name):
    case = make_case(tmp_path, **CASES[name])
    base, merged = load_file(case.base), load_file(case.merged)
    source = open_source(str(case.adapter), open_checkpoint(case.base))
    assert isinstance(source, LycorisSource)
    assert source.kind == ("dora" if "dora" in name else "lora")
    if name.startswith("tucker"):
        assert sum(k.endswith(".lora_mid.weight") for k in read_header(str(case.adapter))[0]) == 2
    produced = sorted(source.infos())
    changed = sorted(k for k in base if not torch.equal(base[k], merged[k]))
    skipped = sorted(s["tensor"] for s in source.skipped)
    assert sorted(produced + skipped) == changed and len(produced) >= 6
    for tensor in produced:
        assert _relative_error(_effective(source, base, tensor), merged[tensor], base[tensor]) < 1e-5, tensor
    source.close()


def test_per_module_rank_and_alpha_are_used(tmp_path):
    """Linear (r=4, alpha=2) and conv (r=3, alpha=6) modules: scales 0.5 and 2, neither 1."""
    case = make_case(tmp_path)
    source = open_source(str(case.adapter), open_checkpoint(case.base))
    assert source.adapter_config.rank_and_scale("layers.0.q_proj") == (4, 0.5)
    assert source.adapter_config.rank_and_scale("layers.1.conv") == (3, 2.0)


def test_input_axis_dora_on_a_kernel_is_skipped_with_the_reason(tmp_path):
    case = make_case(tmp_path, **CASES["dora_input_axis"])
    source = open_source(str(case.adapter), open_checkpoint(case.base))
    assert source.magnitude_axes == ["in"]
    reasons = {s["tensor"]: s["reason"] for s in source.skipped}
    assert set(reasons) == {"layers.0.conv.weight", "layers.1.conv.weight"}
    assert all("input-axis DoRA on a convolution kernel" in r for r in reasons.values())


@pytest.mark.parametrize("name", ["lora", "dora_output_axis", "dora_input_axis", "tucker_dora"])
def test_compare_matches_the_merged_model(tmp_path, name):
    case = make_case(tmp_path, **CASES[name])
    ours = dora_diag.compare(case.base, case.adapter).table.sort_values("tensor").reset_index(drop=True)
    theirs = dora_diag.compare(case.base, case.merged).table
    theirs = theirs[theirs["tensor"].isin(ours["tensor"])].sort_values("tensor").reset_index(drop=True)
    assert list(ours["tensor"]) == list(theirs["tensor"]) and len(ours) >= 6
    for col in ("delta_m", "delta_d", "rel_delta_m"):
        np.testing.assert_allclose(ours[col], theirs[col], rtol=1e-5, err_msg=col)


def test_missing_alpha_means_scale_one(tmp_path):
    """alpha absent: LyCORIS uses alpha = r; files written with alpha = r and the key dropped."""
    case = make_case(tmp_path, linear_alpha=4, conv_alpha=3)
    tensors = {k: v for k, v in load_file(case.adapter).items() if not k.endswith(".alpha")}
    save_file(tensors, str(case.adapter))
    base, merged = load_file(case.base), load_file(case.merged)
    source = open_source(str(case.adapter), open_checkpoint(case.base))
    for tensor in source.infos():
        assert _relative_error(_effective(source, base, tensor), merged[tensor], base[tensor]) < 1e-5


def test_other_algorithms_and_unknown_names_are_skipped(tmp_path):
    case = make_case(tmp_path)
    tensors = load_file(case.adapter)
    tensors["lycoris_layers_0_v_proj.hada_w1_a"] = tensors.pop("lycoris_layers_0_v_proj.lora_down.weight")
    tensors["lycoris_not_in_base.lora_down.weight"] = torch.zeros(2, 3)
    tensors["lycoris_not_in_base.lora_up.weight"] = torch.zeros(3, 2)
    save_file(tensors, str(case.adapter))
    source = open_source(str(case.adapter), open_checkpoint(case.base))
    reasons = {s["tensor"]: s["reason"] for s in source.skipped}
    assert "LoHa is not supported" in reasons["layers.0.v_proj.weight"]
    assert "no base tensor of this name" in reasons["lycoris_not_in_base"]
    assert "layers.0.v_proj.weight" not in source.infos()
    warnings = dora_diag.compare(case.base, case.adapter).meta.warnings
    assert any("2 tensor(s) not compared" in w for w in warnings)


def test_flattened_names_that_fit_two_base_modules_are_not_guessed():
    index = FlatIndex(["a_b.c.weight", "a.b_c.weight", "unet.x.y.weight"])
    path, why = index.resolve("lycoris_a_b_c")
    assert path is None and "a.b_c, a_b.c" in why
    assert index.resolve("lora_unet_x_y") == ("unet.x.y", None)
    assert index.resolve("lycoris_x_y") == (None, None)


def test_a_plain_checkpoint_is_not_a_lycoris_file(tmp_path):
    case = make_case(tmp_path)
    assert is_lycoris_file(read_header(str(case.adapter))[0])
    assert not is_lycoris_file(read_header(str(case.base))[0])


@pytest.mark.parametrize("key, value, message", [
    ("lycoris_layers_0_q_proj.alpha", torch.ones(2), "alpha is not a scalar float"),
    ("lycoris_layers_0_q_proj.alpha", torch.tensor(float("inf")), "alpha is not finite"),
    ("lycoris_layers_0_q_proj.dora_scale", torch.ones(1, 7), "dora_scale has 7 values"),
])
def test_malformed_modules_are_input_errors(tmp_path, key, value, message):
    case = make_case(tmp_path)
    tensors = load_file(case.adapter)
    tensors[key] = value
    save_file(tensors, str(case.adapter))
    with pytest.raises(InputError, match=message):
        dora_diag.compare(case.base, case.adapter)


def test_a_file_with_nothing_applicable_is_refused_with_the_reasons(tmp_path):
    case = make_case(tmp_path)
    renamed = {k.replace("lora_down.weight", "hada_w1_a"): v for k, v in load_file(case.adapter).items()}
    save_file(renamed, str(case.adapter))
    with pytest.raises(InputError, match="none of its 8 modules can be applied.*LyCORIS LoHa is not supported"):
        dora_diag.compare(case.base, case.adapter)
