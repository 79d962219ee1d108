"""PEFT adapters: ΔM/ΔD from the factors must equal those of PEFT's own merge_and_unload()."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import dora_diag

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
from tiny_peft import llama, perturb  # noqa: E402
from dora_diag.errors import InputError, UnsupportedError
from dora_diag.io.checkpoint import open_checkpoint
from dora_diag.io.peft import open_adapter
from dora_diag.metrics.lowrank import LowRankDelta, channel_sums, dense_rows, dora_scale, factor_sums

pytestmark = pytest.mark.filterwarnings("ignore")

CASES = {
    "lora": ("llama", dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])),
    "rslora_patterns": ("llama", dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "v_proj"],
                                      rank_pattern={"layers.1.self_attn.q_proj": 2}, alpha_pattern={"v_proj": 3})),
    "rank_alpha_patterns": ("llama", dict(r=4, lora_alpha=16, target_modules=["q_proj", "o_proj", "up_proj"],
                                          rank_pattern={"o_proj": 2, "^model.layers.0.mlp.up_proj": 6},
                                          alpha_pattern={"layers.1.self_attn.q_proj": 5})),
    "dora": ("llama", dict(r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "v_proj", "gate_proj"])),
    "embedding_lora": ("llama", dict(r=4, lora_alpha=8, target_modules=["embed_tokens", "k_proj"])),
    "embedding_dora": ("llama", dict(r=4, lora_alpha=8, use_dora=True, target_modules=["embed_tokens"])),
    "gpt2_conv1d": ("gpt2", dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc", "c_proj"], fan_in_fan_out=True)),
    "gpt2_conv1d_dora": ("gpt2", dict(r=4, lora_alpha=8, use_dora=True, target_modules=["c_attn", "c_proj", "wte"],
                                      fan_in_fan_out=True)),
    "modules_to_save_tokens": ("bert", dict(r=4, target_modules=["query", "value"], modules_to_save=["classifier"],
                                            trainable_token_indices={"word_embeddings": [1, 5, 7]})),
}


def _tables(case, axis="out"):
    a = dora_diag.compare(case.base, case.adapter, axis=axis)
    m = dora_diag.compare(case.base, case.merged, axis=axis)
    ta = a.table.sort_values("tensor").reset_index(drop=True)
    tm = m.table[m.table["tensor"].isin(ta["tensor"])].sort_values("tensor").reset_index(drop=True)
    return a, ta, tm


@pytest.mark.parametrize("name", list(CASES))
def test_matches_peft_merge_and_unload(make_adapter, name):
    model, kwargs = CASES[name]
    case = make_adapter(model, **kwargs)
    a, ta, tm = _tables(case)
    assert list(ta["tensor"]) == list(tm["tensor"])
    # the merged model differs from the base exactly in the tensors the adapter touches
    changed = tm[(tm["delta_m"] > 0) | (tm["delta_d"] > 0)]
    assert len(changed) == len(ta) > 0
    for col in ("delta_m", "delta_d", "rel_delta_m"):
        np.testing.assert_allclose(ta[col], tm[col], rtol=1e-5, err_msg=col)
    assert {c.kind for r in a.meta.runs for c in r.checkpoints} == {"dora" if kwargs.get("use_dora") else "lora"}


@pytest.mark.parametrize("name", ["dora", "gpt2_conv1d_dora", "rslora_patterns"])
def test_input_axis_matches_merge(make_adapter, name):
    model, kwargs = CASES[name]
    _, ta, tm = _tables(make_adapter(model, **kwargs), axis="in")
    for col in ("delta_m", "delta_d"):
        np.testing.assert_allclose(ta[col], tm[col], rtol=1e-5, err_msg=col)


def test_patterns_change_the_result(make_adapter):
    """Ignoring alpha_pattern would give other numbers: the oracle test is sensitive to it."""
    model, kwargs = CASES["rslora_patterns"]
    case = make_adapter(model, **kwargs)
    cfg_path = case.adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["alpha_pattern"] = {}
    cfg_path.write_text(json.dumps(cfg))
    _, ta, tm = _tables(case)
    v = ta["tensor"].str.contains("v_proj")
    assert not np.allclose(ta.loc[v, "delta_m"], tm.loc[v, "delta_m"], rtol=1e-3)


def test_reads_only_targeted_tensors(make_adapter):
    case = make_adapter("llama", r=4, target_modules=["q_proj", "v_proj"])
    a = dora_diag.compare(case.base, case.adapter)
    base = open_checkpoint(case.base)
    targeted = sum(i.nbytes for n, i in base.tensors.items() if "q_proj" in n or "v_proj" in n)
    adapter_bytes = sum(i.nbytes for i in _adapter_header(case.adapter).values())
    assert a.meta.bytes_read == targeted + adapter_bytes
    assert a.meta.bytes_read < base.nbytes / 4


def _adapter_header(directory):
    from dora_diag.io.safetensors_file import read_header

    return read_header(str(directory / "adapter_model.safetensors"))[0]


def test_adapter_file_path_and_run_directory(make_adapter, tmp_path):
    case = make_adapter("llama", r=4, target_modules=["q_proj"])
    file_path = case.adapter / "adapter_model.safetensors"
    assert len(dora_diag.compare(case.base, file_path).table) == 2
    run = tmp_path / "run"
    for step in (10, 20):
        ckpt = run / f"checkpoint-{step}"
        shutil.copytree(case.adapter, ckpt)
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (ckpt / "optimizer.pt").write_bytes(b"not read")
    for f in ("adapter_config.json", "adapter_model.safetensors"):  # TRL: final adapter at the run root
        shutil.copy(case.adapter / f, run / f)
    a = dora_diag.compare(case.base, run)
    assert a.table["checkpoint"].unique().tolist() == ["checkpoint-10", "checkpoint-20", "final"]
    assert a.table["step"].dropna().unique().tolist() == [10, 20]
    assert a.table.groupby("checkpoint")["delta_m"].mean().nunique() == 1


def test_refuses_pickle_adapter(make_adapter):
    case = make_adapter("llama", r=2, target_modules=["q_proj"])
    (case.adapter / "adapter_model.safetensors").rename(case.adapter / "adapter_model.bin")
    with pytest.raises(InputError, match="adapter_model.bin is a pickle"):
        dora_diag.compare(case.base, case.adapter)


@pytest.mark.parametrize("patch, message", [
    ({"peft_type": "IA3"}, "peft_type 'IA3' is not supported"),
    ({"init_lora_weights": "pissa_niter_4"}, "rewrites the base weights"),
    ({"alora_invocation_tokens": [1, 2]}, "aLoRA"),
    ({"r": 8}, "adapter_config gives r=8"),
])
def test_refuses_unsupported_configs(make_adapter, patch, message):
    case = make_adapter("llama", r=2, target_modules=["q_proj"])
    cfg_path = case.adapter / "adapter_config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), **patch}))
    with pytest.raises(InputError, match=message):
        dora_diag.compare(case.base, case.adapter)


def test_wrong_base_is_named(make_adapter, tmp_path):
    case = make_adapter("llama", r=2, target_modules=["q_proj"])
    other = make_adapter("gpt2", r=2, target_modules=["c_attn"], fan_in_fan_out=True)
    with pytest.raises(InputError, match="this adapter changes 2 tensors, 0 found in the base"):
        dora_diag.compare(other.base, case.adapter)
    with pytest.raises(InputError, match="no tensor of"):
        dora_diag.compare(other.base, case.adapter, allow_partial=True)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=96)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "wider")
    with pytest.raises(InputError, match="do not fit base tensor model.layers.0.self_attn.q_proj.weight"):
        dora_diag.compare(tmp_path / "wider", case.adapter)


def test_incomplete_factors_are_refused(make_adapter):
    from safetensors.torch import load_file, save_file

    case = make_adapter("llama", r=2, target_modules=["q_proj"])
    path = case.adapter / "adapter_model.safetensors"
    save_file({k: v for k, v in load_file(path).items() if "lora_B" not in k}, path)
    with pytest.raises(UnsupportedError, match="incomplete set of LoRA factors"):
        open_adapter(str(case.adapter), open_checkpoint(case.base))


# ---- the factor identities against an fp64 dense reference ----------------------------------

@pytest.mark.parametrize("axis", ["out", "in"])
@pytest.mark.parametrize("dora", [False, True])
def test_factor_sums_equal_dense_fp64(axis, dora):
    g = torch.Generator().manual_seed(1)
    rows, cols, r = 24, 40, 3
    w = torch.randn(rows, cols, generator=g)
    w[5] = 0  # an all-zero base row
    L, R = 0.1 * torch.randn(rows, r, generator=g), torch.randn(r, cols, generator=g)
    channels = rows if axis == "out" else cols
    mag = (torch.rand(channels, generator=g, dtype=torch.float64) + 0.5) if dora else None
    delta = LowRankDelta(L, R, mag, axis)
    v = w.double() + L.double() @ R.double()
    dim = 1 if axis == "out" else 0
    if dora:
        k = mag / torch.linalg.vector_norm(v, dim=dim)
        c = v * (k.unsqueeze(1) if axis == "out" else k.unsqueeze(0))
    else:
        c = v
    w64, d = w.double(), c - w.double()
    ref = {"a2": w64.square().sum(dim), "c2": c.square().sum(dim), "d2": d.square().sum(dim),
           "p": (d * (w64 + c)).sum(dim)}
    full = factor_sums(w, L, R, axis)
    got = channel_sums(full, dora_scale(mag, full) if dora else None)
    for name in ("a2", "c2", "d2", "p"):
        torch.testing.assert_close(getattr(got, name), ref[name], rtol=1e-5, atol=1e-9, msg=name)
    col_scale = dora_scale(mag, full)[0] if dora and axis == "in" else None
    torch.testing.assert_close(dense_rows(delta, w, 0, rows, col_scale).double(), c, rtol=1e-5, atol=1e-6)


def test_dora_zero_channel_stays_zero():
    full = factor_sums(torch.zeros(2, 4), torch.zeros(2, 1), torch.ones(1, 4), "out")
    k, km1 = dora_scale(torch.tensor([1.0, 2.0], dtype=torch.float64), full)
    assert k.tolist() == [0.0, 0.0] and km1.tolist() == [-1.0, -1.0]


@pytest.mark.parametrize("use_dora", [False, True])
def test_conv2d_matches_merge(tmp_path, use_dora):
    """Conv2d factors: lora_A (r, in, kh, kw), lora_B (out, r, 1, 1), magnitude (1, out, 1, 1)."""
    from safetensors.torch import save_file
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.proj = nn.Conv2d(6, 8, 3), nn.Linear(8, 8)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block() for _ in range(3)])

    def save(model, d):
        d.mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, d / "model.safetensors")

    torch.manual_seed(0)
    net = Net()
    save(net, tmp_path / "base")
    pm = peft.get_peft_model(net, peft.LoraConfig(r=2, target_modules=["conv", "proj"], use_dora=use_dora))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.add_(0.2 * torch.randn(p.shape))
            elif "magnitude" in name:
                p.mul_(0.8 + 0.4 * torch.rand(p.shape))
    pm.save_pretrained(tmp_path / "adapter")
    save(pm.merge_and_unload(), tmp_path / "merged")
    _, ta, tm = _tables(SimpleNamespace(base=tmp_path / "base", adapter=tmp_path / "adapter", merged=tmp_path / "merged"))
    assert ta["tensor"].str.contains("conv").sum() == 3
    for col in ("delta_m", "delta_d"):
        np.testing.assert_allclose(ta[col], tm[col], rtol=1e-5, err_msg=col)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["dora", "gpt2_conv1d_dora", "modules_to_save_tokens"])
def test_cuda_matches_cpu(make_adapter, name):
    model, kwargs = CASES[name]
    case = make_adapter(model, **kwargs)
    cpu = dora_diag.compare(case.base, case.adapter, device="cpu").table
    gpu = dora_diag.compare(case.base, case.adapter, device="cuda").table
    for col in ("delta_m", "delta_d"):
        np.testing.assert_allclose(gpu[col], cpu[col], rtol=1e-5, err_msg=col)


@pytest.mark.parametrize("use_dora", [False, True])
def test_resized_vocabulary_uses_saved_base_layer(tmp_path, use_dora):
    """A resized, targeted embedding: PEFT saves base_layer.weight (100 rows) and DoRA's column
    norms run over all of it; the shared 96 rows are compared with the (96-row) base."""
    torch.manual_seed(0)
    model = llama(vocab=96)
    model.save_pretrained(tmp_path / "base")
    model.resize_token_embeddings(100, mean_resizing=False)
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"], use_dora=use_dora))
    perturb(pm, 1)
    pm.save_pretrained(tmp_path / "adapter")
    pm.merge_and_unload().save_pretrained(tmp_path / "merged")
    _, ta, tm = _tables(SimpleNamespace(base=tmp_path / "base", adapter=tmp_path / "adapter", merged=tmp_path / "merged"))
    emb = ta[ta["tensor"] == "model.embed_tokens.weight"].iloc[0]
    assert emb["flags"] == "resized 96->100 rows"
    for col in ("delta_m", "delta_d"):
        np.testing.assert_allclose(ta[col], tm[col], rtol=1e-5, err_msg=col)


def test_bf16_base(tmp_path):
    """A bf16 base streams through the same math: equal to the fp32 copy of the same values."""
    torch.manual_seed(0)
    model = llama().to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    model.float().save_pretrained(tmp_path / "fp32")
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True))
    perturb(pm, 1)
    pm.save_pretrained(tmp_path / "adapter")
    a = dora_diag.compare(tmp_path / "bf16", tmp_path / "adapter").table
    b = dora_diag.compare(tmp_path / "fp32", tmp_path / "adapter").table
    assert set(a["dtype"]) == {"BF16"}
    for col in ("delta_m", "delta_d"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-6, err_msg=col)


def test_group_keys_spellings():
    from dora_diag.io.peft_keys import group_keys
    from dora_diag.io.safetensors_file import TensorInfo

    def info(name, shape):
        return TensorInfo(name, "F32", shape, "f", 0, 0)

    keys = {
        "base_model.model.m.q.lora_A.weight": (2, 8), "base_model.model.m.q.lora_B.weight": (8, 2),
        "base_model.model.m.q.lora_B.bias": (8,), "base_model.model.m.q.lora_magnitude_vector.weight": (8,),
        "base_model.model.head.modules_to_save.default.weight": (3, 8), "emb.lora_embedding_A": (2, 50),
        "emb.lora_embedding_B": (8, 2),
    }
    modules, full = group_keys({k: info(k, s) for k, s in keys.items()}, "f")
    assert set(modules) == {"m.q", "emb"} and list(full) == ["head.weight"]
    assert set(modules["m.q"].parts) == {"A", "B", "magnitude"} and modules["emb"].is_embedding
    with pytest.raises(UnsupportedError, match="unrecognized adapter tensor 'm.q.lora_A.default.weight'"):
        group_keys({"m.q.lora_A.default.weight": info("x", (2, 8))}, "f")


@pytest.mark.parametrize("precision", ["high", "medium"])
@pytest.mark.parametrize("name", ["lora", "dora"])
def test_exact_when_the_caller_lowered_float32_matmul_precision(make_adapter, name, precision):
    """Training scripts and notebooks often set "high" (TF32 on CUDA) or "medium" (bf16 on CPUs
    with AMX/AVX512-BF16, like CI's): the factor products must stay fp32 all the same, and the
    caller's setting must be back afterwards."""
    model, kwargs = CASES[name]
    case = make_adapter(model, **kwargs)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        _, ta, tm = _tables(case)
        assert torch.get_float32_matmul_precision() == precision
    finally:
        torch.set_float32_matmul_precision(before)
    for col in ("delta_m", "delta_d", "rel_delta_m"):
        np.testing.assert_allclose(ta[col], tm[col], rtol=1e-5, err_msg=col)


def test_a_callers_default_torch_device_is_not_used(make_adapter):
    """Notebooks set ``torch.set_default_device("cuda")``; "meta" stands in for it without a GPU:
    every tensor the engine makes names its device."""
    model, kwargs = CASES["dora"]
    case = make_adapter(model, **kwargs)
    want = _tables(case)[1]
    torch.set_default_device("meta")
    try:
        got = dora_diag.compare(case.base, case.adapter).table.sort_values("tensor").reset_index(drop=True)
    finally:
        torch.set_default_device(None)
    np.testing.assert_array_equal(got["delta_d"], want["delta_d"])
