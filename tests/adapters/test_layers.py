"""Adapter layers against dense float64 references written from the paper's formulas."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers.pytorch_utils import Conv1D

from dora_diag.errors import InputError
from dora_diag.adapters.inject import (AdapterConfig, adapter_layers, apply_adapters, find_targets, merge_adapters,
                                    param_groups)
from dora_diag.adapters.dvora import DVoraLinear
from dora_diag.adapters.layers import DoraLinear, LoraLinear, MagnitudeOnlyLinear
from dora_diag.adapters.norms import NORM_EPS, factored_row_norm, squared_row_norms
from dora_diag.methods import ADAPTER_METHODS as METHODS



class Block(nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.q_proj = nn.Linear(12, 16, dtype=dtype)
        self.v_proj = nn.Linear(16, 12, bias=False, dtype=dtype)
        self.c_fc = Conv1D(20, 12).to(dtype)           # weight (in=12, out=20)
        self.up_proj = nn.Linear(20, 12, dtype=dtype)

    def forward(self, x):
        return self.up_proj(torch.tanh(self.c_fc(self.v_proj(torch.tanh(self.q_proj(x))))))


def _perturb(model: nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _reference_dora(w0, a, b, s, m, x, detach):
    """m ⊙ V/‖V‖_row with V = W0 + s·B·A, built densely in float64; returns x Wᵀ (no bias)."""
    v = w0 + s * b @ a
    norm = torch.linalg.vector_norm(v, dim=1)
    if detach:
        norm = norm.detach()
    return x @ ((m / norm).unsqueeze(1) * v).t()


@pytest.mark.parametrize("method", METHODS)
def test_step_zero_reproduces_base_and_merge_equals_forward(method):
    torch.manual_seed(0)
    model = Block()
    x = torch.randn(3, 5, 12)
    y0 = model(x)
    targets = ("q_proj", "v_proj", "c_fc", "up_proj")
    names = apply_adapters(model, AdapterConfig(method=method, rank=4, targets=targets))
    assert names == ["q_proj", "v_proj", "c_fc", "up_proj"]
    torch.testing.assert_close(model(x), y0, rtol=0, atol=1e-6)
    _perturb(model)
    y1 = model(x).detach()
    assert (y1 - y0).abs().max() > 1e-2
    merge_adapters(model)
    assert isinstance(model.c_fc, Conv1D) and model.c_fc.weight.shape == (12, 20)
    assert not adapter_layers(model)
    torch.testing.assert_close(model(x), y1, rtol=0, atol=1e-5)


def test_only_adapter_parameters_train():
    model = Block()
    apply_adapters(model, AdapterConfig(method="dora", targets=("q_proj",), magnitude_only=("up_proj",)))
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["q_proj.lora_A", "q_proj.lora_B", "q_proj.magnitude", "up_proj.magnitude"]
    assert isinstance(model.up_proj, MagnitudeOnlyLinear) and isinstance(model.q_proj, DoraLinear)


@pytest.mark.parametrize("detach", [True, False], ids=["detached_norm", "exact_gradient"])
@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("factored_from", [0, 10**9], ids=["factored_norm", "fused_dense_norm"])
def test_dora_forward_and_gradients_match_dense_reference(detach, rslora, factored_from, monkeypatch):
    monkeypatch.setattr("dora_diag.adapters.layers.FACTORED_MIN_ELEMENTS", factored_from)
    torch.manual_seed(1)
    base = nn.Linear(24, 10, dtype=torch.float64)
    layer = DoraLinear(base, rank=3, alpha=6.0, use_rslora=rslora, detach_norm=detach)
    _perturb(layer)
    s = 6.0 / (3 ** 0.5 if rslora else 3)
    assert layer.scaling == pytest.approx(s)
    x = torch.randn(7, 24, dtype=torch.float64)
    g = torch.randn(7, 10, dtype=torch.float64)
    (layer(x) * g).sum().backward()

    a, b, m = (t.detach().clone().requires_grad_(True) for t in (layer.lora_A, layer.lora_B, layer.magnitude))
    ref = _reference_dora(base.weight, a, b, s, m, x, detach) + base.bias
    (ref * g).sum().backward()
    torch.testing.assert_close(layer(x), ref, rtol=1e-12, atol=1e-12)
    for ours, theirs in ((layer.lora_A, a), (layer.lora_B, b), (layer.magnitude, m)):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-10, atol=1e-12)


def test_exact_and_detached_gradients_differ():
    """The option must do something: with B ≠ 0 the norm's gradient changes dL/dA."""
    grads = []
    for detach in (True, False):
        torch.manual_seed(2)
        layer = DoraLinear(nn.Linear(8, 6, dtype=torch.float64), rank=2, alpha=2.0, detach_norm=detach)
        _perturb(layer)
        layer(torch.ones(3, 8, dtype=torch.float64)).pow(2).sum().backward()
        grads.append(layer.lora_A.grad)
    assert (grads[0] - grads[1]).abs().max() > 1e-6


@settings(max_examples=40, deadline=None)
@given(out=st.integers(1, 9), inp=st.integers(1, 9), rank=st.integers(1, 5), scale=st.floats(1e-3, 10.0),
       seed=st.integers(0, 2**16), zero_rows=st.integers(0, 3))
def test_factored_norm_equals_dense_norm(out, inp, rank, scale, seed, zero_rows):
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(out, inp, generator=g, dtype=torch.float64)
    w0[:zero_rows] = 0
    a = torch.randn(rank, inp, generator=g, dtype=torch.float64)
    b = torch.randn(out, rank, generator=g, dtype=torch.float64) * 0.1
    dense = torch.linalg.vector_norm(w0 + scale * b @ a, dim=1)
    torch.testing.assert_close(factored_row_norm(w0, squared_row_norms(w0), a, b, scale), dense,
                               rtol=1e-9, atol=1e-9 * (1 + dense.max().item()))


def test_all_zero_rows_stay_finite():
    """PEFT #2049: a zero row gives 0/0 there; here m/max(‖V‖, eps) keeps forward and gradients finite."""
    base = nn.Linear(8, 5)
    with torch.no_grad():
        base.weight[1:3] = 0
    for detach in (True, False):
        layer = DoraLinear(copy.deepcopy(base), rank=2, alpha=4.0, detach_norm=detach)
        assert layer.magnitude[1:3].eq(0).all()
        y = layer(torch.randn(4, 8))
        y.sum().backward()
        assert torch.isfinite(y).all()
        assert all(torch.isfinite(p.grad).all() for p in (layer.lora_A, layer.lora_B, layer.magnitude))
        assert torch.isfinite(layer.merged_weight()).all()
    assert layer.row_norm()[1].item() == pytest.approx(NORM_EPS)


def test_dvora_is_dora_with_vera_direction():
    torch.manual_seed(3)
    model = Block(torch.float64)
    apply_adapters(model, AdapterConfig(method="dvora", rank=6, targets=("q_proj", "v_proj", "c_fc")))
    q, v = model.q_proj, model.v_proj
    assert isinstance(q, DVoraLinear)
    assert sorted(n for n, p in q.named_parameters() if p.requires_grad) == ["lambda_b", "lambda_d", "magnitude"]
    assert q.vera_A.shape == (6, 12) and v.vera_A.shape == (6, 16) and q.vera_B.shape == (16, 6)
    torch.testing.assert_close(v.vera_A[:, :12], q.vera_A)          # one shared matrix, sliced per layer
    torch.testing.assert_close(v.vera_B, q.vera_B[:12])
    assert "vera_A" not in q.state_dict()
    _perturb(model)
    x = torch.randn(4, 12, dtype=torch.float64)
    b_eff, a_eff = q.lambda_b[:, None] * q.vera_B, q.lambda_d[:, None] * q.vera_A
    ref = _reference_dora(q.w0, a_eff, b_eff, 1.0, q.magnitude, x, True) + q.bias
    torch.testing.assert_close(q(x), ref, rtol=1e-12, atol=1e-12)


def test_magnitude_only_and_frozen_magnitude():
    torch.manual_seed(4)
    base = nn.Linear(6, 4, dtype=torch.float64)
    mag = MagnitudeOnlyLinear(copy.deepcopy(base))
    _perturb(mag)
    x = torch.randn(3, 6, dtype=torch.float64)
    w = (mag.magnitude / torch.linalg.vector_norm(base.weight, dim=1)).unsqueeze(1) * base.weight
    torch.testing.assert_close(mag(x), x @ w.t() + base.bias)

    frozen = nn.Sequential(base)
    apply_adapters(frozen, AdapterConfig(method="dora-frozen-magnitude", targets=("0",)))
    assert sorted(n for n, p in frozen.named_parameters() if p.requires_grad) == ["0.lora_A", "0.lora_B"]
    assert not frozen[0].magnitude.requires_grad


def test_param_groups_scale_magnitude_lr():
    model = Block()
    apply_adapters(model, AdapterConfig(method="dora", targets=("q_proj", "c_fc")))
    groups = param_groups(model, lr=1e-3, weight_decay=0.1, magnitude_lr_mult=10.0)
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    assert all(g["weight_decay"] == 0.1 for g in groups)
    assert {id(p) for p in groups[1]["params"]} == {id(model.q_proj.magnitude), id(model.c_fc.magnitude)}
    assert len(groups[0]["params"]) == 4
    torch.optim.AdamW(groups)                                      # accepted as is
    with pytest.raises(InputError, match="no trainable"):
        param_groups(Block().requires_grad_(False), lr=1.0)


def test_target_matching_like_peft():
    model = nn.ModuleDict({"layers": nn.ModuleList([Block(), Block()])})
    suffix = find_targets(model, AdapterConfig(targets=("q_proj",)))
    assert list(suffix) == ["layers.0.q_proj", "layers.1.q_proj"]
    regex = find_targets(model, AdapterConfig(targets=(r"layers\.1\..*_proj",)))
    assert list(regex) == ["layers.1.q_proj", "layers.1.v_proj", "layers.1.up_proj"]
    with pytest.raises(InputError, match="no nn.Linear"):
        find_targets(model, AdapterConfig(targets=("proj",)))      # no partial-word match
    mixed = find_targets(model, AdapterConfig(method="dora-magnitude-only", targets=("q_proj",),
                                              magnitude_only=("up_proj",)))
    assert mixed == {"layers.0.q_proj": False, "layers.0.up_proj": True,
                     "layers.1.q_proj": False, "layers.1.up_proj": True}
    all_mag = find_targets(model, AdapterConfig(method="dora-magnitude-only", targets=("v_proj",)))
    assert set(all_mag.values()) == {True}


@pytest.mark.parametrize("cfg,match", [
    (AdapterConfig(targets=("nothing_here",)), "no nn.Linear"),
    (AdapterConfig(targets=("q_proj(",)), "not a valid regular expression"),
    (AdapterConfig(method="vera"), "unknown adapter method"),
    (AdapterConfig(rank=0), "positive integer"),
    (AdapterConfig(method="lora", magnitude_only=("up_proj",)), "trainable magnitude"),
])
def test_bad_configs_raise_input_error(cfg, match):
    with pytest.raises(InputError, match=match):
        apply_adapters(Block(), cfg)


def test_double_apply_and_empty_merge_refused():
    model = Block()
    apply_adapters(model, AdapterConfig(targets=("q_proj",)))
    with pytest.raises(InputError, match="already has an adapter"):
        apply_adapters(model, AdapterConfig(targets=("v_proj",)))
    with pytest.raises(InputError, match="no adapters"):
        merge_adapters(Block())


def test_norm_cache_follows_dtype_and_state_dict():
    torch.manual_seed(5)
    layer = DoraLinear(nn.Linear(8, 4), rank=2, alpha=2.0)
    layer.double()
    assert layer.w0_sq.dtype == torch.float64
    torch.testing.assert_close(layer.w0_sq, layer.w0.pow(2).sum(1))
    state = layer.state_dict()
    state["base_layer.weight"] = 2 * state["base_layer.weight"]
    layer.load_state_dict(state)
    torch.testing.assert_close(layer.w0_sq, layer.w0.pow(2).sum(1))


def test_lora_layer_math():
    torch.manual_seed(6)
    layer = LoraLinear(Conv1D(5, 7), rank=2, alpha=3.0)
    _perturb(layer)
    x = torch.randn(2, 3, 7)
    ref = x @ layer.base_layer.weight + layer.bias + 1.5 * x @ layer.lora_A.t() @ layer.lora_B.t()
    torch.testing.assert_close(layer(x), ref)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dora_on_cuda_matches_cpu():
    torch.manual_seed(7)
    model = Block()
    apply_adapters(model, AdapterConfig(method="dora", rank=4, targets=("q_proj", "c_fc")))
    _perturb(model)
    x = torch.randn(3, 12)
    expected = model(x)
    model.cuda()
    assert model.q_proj.w0_sq.device.type == "cuda"
    torch.testing.assert_close(model(x.cuda()).cpu(), expected, rtol=1e-4, atol=1e-5)


class _WeightOnAccess(nn.Linear):
    """Like the NF4 base: an nn.Linear whose weight is computed from a buffer on every access."""

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("stored", linear.weight.detach().to(torch.bfloat16))
        self.bias = nn.Parameter(linear.bias.detach().clone())

    @property
    def weight(self) -> torch.Tensor:
        return self.stored.float()


def test_dora_over_weight_on_access_base_merges_to_dense():
    """QDoRA-style base: merging yields a plain nn.Linear with the merged weight and the bias."""
    torch.manual_seed(8)
    model = Block()
    model.q_proj = _WeightOnAccess(model.q_proj)
    apply_adapters(model, AdapterConfig(method="dora", rank=4, targets=("q_proj",)))
    _perturb(model)
    x = torch.randn(3, 12)
    expected = model(x).detach()
    merge_adapters(model)
    assert type(model.q_proj) is nn.Linear and not model.q_proj.weight.requires_grad
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
