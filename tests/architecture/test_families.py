"""Architecture families built by transformers/diffusers from tiny configs, saved with
``save_pretrained``, perturbed: every 2-D+ tensor is measured on the right axis (the truth is
the live module's type, not our tables) against a float64 reference, or listed with a reason,
and no two tensors of a checkpoint share (stack, layer, module, expert)."""

from __future__ import annotations

import glob

import pytest
import torch

import dora_diag
from ckpt_helpers import reference_changes, write_checkpoint
from tiny_families import FAMILIES, MissingFamily, build, save_pair

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore")

# Module types whose output channels are measured elsewhere than the stored first axis.
_CONV1D = transformers.pytorch_utils.Conv1D


def _stored(directory) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for path in glob.glob(f"{directory}/*.safetensors"):
        out.update(load_file(path))
    return out


def _conv1d_weights(model) -> set[str]:
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, _CONV1D)}


def _by_channel(name: str, w: torch.Tensor, conv1d: set[str]) -> torch.Tensor:
    """The reference's own view: (channels, elements) for a tensor as the model uses it."""
    if name in conv1d:
        return w.T
    if w.dim() > 2 and not name.endswith(".weight"):
        return w.reshape(-1, w.shape[-1])   # one vector per position / (expert, row)
    return w.reshape(w.shape[0], -1)        # Linear rows, conv kernels per output channel


def _base_input(base):
    files = glob.glob(f"{base}/*.safetensors")
    return base if len(files) != 1 or (base / "config.json").is_file() else files[0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_measured_on_the_right_axis(family, tmp_path):
    try:
        model = build(family)
    except MissingFamily as e:
        pytest.skip(f"installed libraries lack {e}")
    conv1d = _conv1d_weights(model)
    base, ft = save_pair(model, tmp_path)
    a = dora_diag.compare(_base_input(base), _base_input(ft))
    t = a.table[a.table["group"] == ""]
    places = list(zip(t["stack"], t["layer"].astype(object), t["module"], t["expert"].astype(object)))
    assert len(set(places)) == len(places), "two tensors share (stack, layer, module, expert)"
    w0, w1 = _stored(base), _stored(ft)
    measured = set(t["tensor"])
    listed = {s["tensor"] for s in a.meta.skipped}
    for name, w in w0.items():
        if w.dim() >= 2 and w.is_floating_point():
            assert name in measured or name in listed, name
    assert len(measured) >= 6
    for _, row in t.iterrows():
        a0, a1 = (_by_channel(row["tensor"], w[row["tensor"]], conv1d) for w in (w0, w1))
        ref = reference_changes(a0, a1)
        assert (row["rows"], row["cols"]) == tuple(a0.shape), row["tensor"]
        for col in ("delta_m", "delta_d", "rel_delta_m"):
            assert row[col] == pytest.approx(ref[col], rel=2e-4, abs=1e-9, nan_ok=True), (row["tensor"], col)


def test_towers_and_experts_are_kept_apart(tmp_path):
    base, ft = save_pair(build("clip"), tmp_path / "clip")
    t = dora_diag.compare(base, ft).table
    q = t[t["tensor"].str.endswith("layers.0.self_attn.q_proj.weight")]
    assert sorted(q["module"]) == ["text_model.q_proj", "vision_model.q_proj"]
    assert sorted(q["stack"]) == ["text_model.encoder", "vision_model.encoder"]
    base, ft = save_pair(build("mixtral"), tmp_path / "mixtral")
    t = dora_diag.compare(base, ft).table
    w1 = t[t["module"] == "w1"]
    assert sorted(w1["expert"]) == [0, 0, 1, 1, 2, 2] and sorted(set(w1["layer"])) == [0, 1]


def test_resnet_stages_get_distinct_layers(tmp_path):
    base, ft = save_pair(build("resnet"), tmp_path)
    t = dora_diag.compare(base, ft).table
    conv = t[t["module"] == "layer.0.convolution"]
    assert list(conv["layer"]) == [0, 1, 2]     # stages.0.layers.{0,1}, stages.1.layers.0 in forward order


def test_vit_position_embeddings_are_one_channel_per_position(tmp_path):
    base, ft = save_pair(build("vit"), tmp_path)
    t = dora_diag.compare(base, ft).table
    row = t[t["tensor"] == "vit.embeddings.position_embeddings"].iloc[0]
    assert (row["rows"], row["cols"]) == (5, 16)    # (1, 5, 16): 4 patches + CLS


@pytest.mark.parametrize("model_type,transposed", [("mixtral", False), ("gpt_oss", True)])
def test_stored_experts_are_measured_per_expert_and_output_channel(tmp_path, model_type, transposed):
    """transformers 5 stores experts as one (E, out, in) tensor (gpt-oss: (E, in, out), x @ W)."""
    g = torch.Generator().manual_seed(0)
    e, hidden, inter = 3, 6, 4
    shapes = {"gate_up_proj": (2 * inter, hidden), "down_proj": (hidden, inter)}
    base = {f"model.layers.0.mlp.experts.{k}": torch.randn(e, *(s[::-1] if transposed else s), generator=g)
            for k, s in shapes.items()}
    ft = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    cfg = {"model_type": model_type}
    a = dora_diag.compare(write_checkpoint(tmp_path / "b", base, cfg), write_checkpoint(tmp_path / "f", ft, cfg),
                          split_fused=True)
    t = a.table
    assert sorted(t[t["group"] == ""]["expert"]) == [0, 0, 1, 1, 2, 2]
    for name, w0 in base.items():
        for i in range(e):
            a0, a1 = (w[i].T if transposed else w[i] for w in (w0, ft[name]))
            rows = t[(t["tensor"] == f"{name}[{i}]") & (t["expert"] == i)].set_index("group")
            assert rows.loc["", "rows"] == a0.shape[0]
            assert rows.loc["", "delta_d"] == pytest.approx(reference_changes(a0, a1)["delta_d"], rel=1e-4)
            if name.endswith("gate_up_proj"):
                gate = slice(0, None, 2) if transposed else slice(0, inter)
                ref = reference_changes(a0[gate], a1[gate])
                assert rows.loc["gate", "delta_m"] == pytest.approx(ref["delta_m"], rel=1e-4)


def test_adapter_on_both_towers_matches_peft_merge(tmp_path):
    peft = pytest.importorskip("peft")
    from tiny_peft import perturb

    model = build("clip")
    model.save_pretrained(tmp_path / "base")
    pm = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    perturb(pm, 5)
    pm.save_pretrained(tmp_path / "adapter")
    pm.merge_and_unload().save_pretrained(tmp_path / "merged")
    ta = dora_diag.compare(tmp_path / "base", tmp_path / "adapter").table.set_index("tensor").sort_index()
    tm = dora_diag.compare(tmp_path / "base", tmp_path / "merged").table.set_index("tensor").loc[ta.index]
    assert len(ta) == 8 and set(ta["module"]) == {f"{t}.{m}" for t in ("text_model", "vision_model")
                                                  for m in ("q_proj", "v_proj")}
    for col in ("delta_m", "delta_d"):
        assert list(ta[col]) == pytest.approx(list(tm[col]), rel=1e-5)
