"""PEFT adapter files: ours load in PEFT (every method) and PEFT's load in ours, with equal outputs."""

from __future__ import annotations

import copy
import json

import peft
import pytest
import safetensors.torch
import torch
from safetensors import safe_open
from tiny_peft import MODELS

from dora_diag.errors import InputError, UnsupportedError
from dora_diag.methods import ADAPTER_METHODS
from dora_diag.adapters.inject import AdapterConfig, adapter_layers, apply_adapters
from dora_diag.adapters.dvora import DVoraLinear
from dora_diag.adapters.layers import MagnitudeOnlyLinear
from dora_diag.adapters.peft_format import load_peft_adapter, save_peft_adapter

IDS = torch.randint(0, 96, (2, 6), generator=torch.Generator().manual_seed(0))


def _logits(model):
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


def _perturb(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _trained(arch, cfg):
    torch.manual_seed(0)
    base = MODELS[arch]()
    ours = copy.deepcopy(base)
    apply_adapters(ours, cfg)
    _perturb(ours)
    return base, ours


CASES = {
    "dora": ("llama", AdapterConfig(method="dora", rank=4, alpha=8, targets=("q_proj", "v_proj"))),
    "lora": ("gpt2", AdapterConfig(method="lora", rank=3, alpha=5, targets=("c_attn", "c_proj"))),
    "lora-rslora": ("llama", AdapterConfig(method="lora", rank=4, alpha=8, use_rslora=True, targets=("q_proj",))),
    "dora-gpt2": ("gpt2", AdapterConfig(method="dora", rank=2, alpha=4, targets=("c_attn", "c_fc"))),
    "frozen-magnitude": ("llama", AdapterConfig(method="dora-frozen-magnitude", rank=4, targets=("o_proj",))),
    "magnitude-only": ("llama", AdapterConfig(method="dora-magnitude-only", rank=4, targets=("q_proj", "k_proj"),
                                              magnitude_only=("gate_proj", "up_proj", "down_proj"))),
    # magnitude-only patterns that match nothing: loading must not make every module magnitude-only
    "magnitude-only-none": ("llama", AdapterConfig(method="dora-magnitude-only", rank=2, targets=("q_proj",),
                                                   magnitude_only=("no_such_module",))),
    "dvora": ("llama", AdapterConfig(method="dvora", rank=8, alpha=8, targets=("q_proj", "v_proj", "down_proj"))),
    "dvora-gpt2-rslora": ("gpt2", AdapterConfig(method="dvora", rank=4, alpha=3, use_rslora=True,
                                                targets=("c_attn", "c_proj"))),
    "regex": ("llama", AdapterConfig(method="dora", rank=2, targets=(r"model\.layers\.1\.self_attn\.[qk]_proj",))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_ours_loads_in_peft_and_back(case, tmp_path):
    arch, cfg = CASES[case]
    base, ours = _trained(arch, cfg)
    expected = _logits(ours)
    assert (expected - _logits(base)).abs().max() > 1e-3
    save_peft_adapter(ours, cfg, tmp_path / "adapter", base_model_name_or_path="tiny")

    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "adapter")
    torch.testing.assert_close(_logits(loaded), expected, rtol=0, atol=2e-5)

    again = copy.deepcopy(base)
    got_cfg = load_peft_adapter(again, tmp_path / "adapter")
    assert got_cfg == cfg
    torch.testing.assert_close(_logits(again), expected, rtol=0, atol=2e-5)
    for (name, a), (_, b) in zip(adapter_layers(ours).items(), adapter_layers(again).items()):
        assert type(a) is type(b)
        for (pname, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
            if pa.requires_grad:
                torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6, msg=f"{name}.{pname}")
    assert all(p.requires_grad == q.requires_grad for p, q in zip(ours.parameters(), again.parameters()))


def test_every_table_method_has_a_round_trip_case():
    """test_ours_loads_in_peft_and_back covers each row of the methods table: a new method needs a case."""
    assert {cfg.method for _, cfg in CASES.values()} == set(ADAPTER_METHODS)


def test_file_layout_matches_peft_save_pretrained(tmp_path):
    arch, cfg = CASES["dora"]
    base, ours = _trained(arch, cfg)
    save_peft_adapter(ours, cfg, tmp_path / "ours")
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8,
                                                                      target_modules=["q_proj", "v_proj"], use_dora=True))
    theirs.save_pretrained(tmp_path / "peft")
    ours_cfg = json.loads((tmp_path / "ours/adapter_config.json").read_text())
    peft_cfg = json.loads((tmp_path / "peft/adapter_config.json").read_text())
    assert ours_cfg.keys() == peft_cfg.keys()
    peft_cfg["target_modules"] = sorted(peft_cfg["target_modules"])
    assert ours_cfg == peft_cfg
    with safe_open(tmp_path / "ours/adapter_model.safetensors", "pt") as a, \
            safe_open(tmp_path / "peft/adapter_model.safetensors", "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(a.get_slice(k).get_shape() == b.get_slice(k).get_shape() for k in a.keys())
        assert json.loads(a.metadata()["dora_diag"])["method"] == "dora"


@pytest.mark.parametrize("use_dora", [True, False])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_peft_adapter_loads_in_ours(arch, use_dora, tmp_path):
    torch.manual_seed(0)
    base = MODELS[arch]()
    targets = ["q_proj", "down_proj"] if arch == "llama" else ["c_attn", "c_fc"]
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=4, lora_alpha=6, target_modules=targets, use_dora=use_dora, fan_in_fan_out=arch == "gpt2"))
    _perturb(theirs)
    theirs.save_pretrained(tmp_path / "peft")
    ours = copy.deepcopy(base)
    cfg = load_peft_adapter(ours, tmp_path / "peft")
    assert cfg.method == ("dora" if use_dora else "lora") and cfg.rank == 4 and cfg.alpha == 6
    assert set(cfg.targets) == set(targets)
    torch.testing.assert_close(_logits(ours), _logits(theirs), rtol=0, atol=2e-5)


@pytest.mark.parametrize("use_dora", [True, False])
def test_rank_and_alpha_patterns_both_ways(use_dora, tmp_path):
    """Per-module r and alpha (PEFT's rank_pattern/alpha_pattern): PEFT's file loads in ours, ours
    in PEFT, with equal outputs; the layers get their own ranks and scalings."""
    torch.manual_seed(0)
    base = MODELS["llama"]()
    patterns = {"rank_pattern": {"q_proj": 2, r"layers\.1\.self_attn\.v_proj": 6}, "alpha_pattern": {"v_proj": 3}}
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=use_dora, **patterns))
    _perturb(theirs)
    theirs.save_pretrained(tmp_path / "peft")
    ours = copy.deepcopy(base)
    cfg = load_peft_adapter(ours, tmp_path / "peft")
    assert cfg.rank_pattern == patterns["rank_pattern"] and cfg.alpha_pattern == patterns["alpha_pattern"]
    layers = adapter_layers(ours)
    assert layers["model.layers.0.self_attn.q_proj"].rank == 2
    assert layers["model.layers.1.self_attn.v_proj"].rank == 6
    assert layers["model.layers.0.self_attn.v_proj"].scaling == pytest.approx(3 / 4)
    torch.testing.assert_close(_logits(ours), _logits(theirs), rtol=0, atol=2e-5)

    save_peft_adapter(ours, cfg, tmp_path / "ours")
    back = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours")
    torch.testing.assert_close(_logits(back), _logits(ours), rtol=0, atol=2e-5)


def test_exported_variants_are_plain_peft_factors(tmp_path):
    _, cfg = CASES["magnitude-only"]
    base, ours = _trained("llama", cfg)
    save_peft_adapter(ours, cfg, tmp_path)
    with safe_open(tmp_path / "adapter_model.safetensors", "pt") as f:
        b = f.get_tensor("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight")
        m = f.get_tensor("base_model.model.model.layers.0.mlp.up_proj.lora_magnitude_vector")
        assert not b.any()
        torch.testing.assert_close(m, ours.model.layers[0].mlp.up_proj.magnitude.detach())
    assert isinstance(ours.model.layers[0].mlp.up_proj, MagnitudeOnlyLinear)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"] == \
        ["down_proj", "gate_proj", "k_proj", "q_proj", "up_proj"]


def test_loading_into_an_adapted_model_refused(tmp_path):
    arch, cfg = CASES["dora"]
    base, ours = _trained(arch, cfg)
    save_peft_adapter(ours, cfg, tmp_path)
    with pytest.raises(InputError, match="already has adapters"):
        load_peft_adapter(ours, tmp_path)


def test_tampered_dvora_factors_refused(tmp_path):
    _, cfg = CASES["dvora"]
    base, ours = _trained("llama", cfg)
    assert isinstance(ours.model.layers[0].self_attn.q_proj, DVoraLinear)
    save_peft_adapter(ours, cfg, tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    with safe_open(path, "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    tensors[key] = torch.randn_like(tensors[key])
    safetensors.torch.save_file(tensors, path, metadata=meta)
    with pytest.raises(InputError, match="not a DVoRA factorisation"):
        load_peft_adapter(copy.deepcopy(base), tmp_path)


def test_bad_adapter_dirs(tmp_path):
    base = MODELS["llama"]()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/adapter_model.bin").write_bytes(b"\x80\x04pickle")
    (tmp_path / "bin/adapter_config.json").write_text("{}")
    with pytest.raises(InputError, match="pickle"):
        load_peft_adapter(base, tmp_path / "bin")
    with pytest.raises(InputError, match="no adapter_model.safetensors"):
        load_peft_adapter(base, tmp_path / "missing")
    _, cfg = CASES["dora"]
    _, ours = _trained("llama", cfg)
    save_peft_adapter(ours, cfg, tmp_path / "ok")
    with pytest.raises(InputError, match="not a Linear/Conv1D module"):
        load_peft_adapter(MODELS["gpt2"](), tmp_path / "ok")
    with pytest.raises(InputError, match="no adapters"):
        save_peft_adapter(MODELS["llama"](), cfg, tmp_path / "none")
