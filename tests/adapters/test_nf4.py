"""NF4: round-trip bounds, packing, the quantized layer under adapters, memory, training with --quantize nf4."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dora_diag.errors import InputError
from dora_diag.adapters.inject import AdapterConfig, apply_adapters
from dora_diag.adapters.nf4 import (NF4_CODE, NF4Linear, dequantize_nf4, model_bytes, quantize_linears,
                                 quantize_nf4)

HALF_GAP = float((NF4_CODE[1:] - NF4_CODE[:-1]).max() / 2)


@pytest.mark.parametrize("shape", [(16, 64), (7, 13), (1, 3)])
def test_roundtrip_error_is_within_half_a_code_step_per_block(shape):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    packed, absmax = quantize_nf4(w, block_size=64)
    n_blocks = -(-w.numel() // 64)
    assert packed.dtype == torch.uint8 and packed.numel() == n_blocks * 32 and absmax.numel() == n_blocks
    back = dequantize_nf4(packed, absmax, w.shape)
    assert back.shape == w.shape
    scale = torch.nn.functional.pad(w.reshape(-1), (0, n_blocks * 64 - w.numel())).view(n_blocks, 64).abs().amax(1)
    bound = (scale[:, None].expand(-1, 64).reshape(-1)[:w.numel()] * HALF_GAP).view(shape)
    assert ((back - w).abs() <= bound + 1e-7).all()
    assert torch.allclose(back.abs().amax(), w.abs().amax())  # each block's absmax is exact


def test_code_points_are_exact_and_zero_blocks_stay_zero():
    w = torch.cat([NF4_CODE * 3.0, torch.zeros(16)]).view(2, 16)
    assert torch.equal(dequantize_nf4(*quantize_nf4(w, 16), w.shape), w)


def test_odd_block_size_is_refused():
    with pytest.raises(InputError, match="block size"):
        quantize_nf4(torch.ones(4), block_size=3)


def test_nf4_linear_matches_its_dequantized_weight_and_adapters_wrap_it():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    q = NF4Linear(lin)
    assert isinstance(q, nn.Linear) and not list(q.parameters())[0].requires_grad
    x = torch.randn(5, 64)
    assert torch.allclose(q(x), x @ q.weight.T + lin.bias, atol=1e-6)
    rel = (q.weight - lin.weight).norm() / lin.weight.norm()
    assert 0 < rel < 0.15
    model = nn.Sequential()
    model.add_module("q_proj", q)
    apply_adapters(model, AdapterConfig(method="dora", rank=4, targets=("q_proj",)))
    assert torch.allclose(model(x), q(x), atol=1e-5)  # DoRA starts at the (quantized) base


def test_quantize_linears_shrinks_the_model_and_skips_heads():
    model = nn.Sequential()
    model.add_module("up_proj", nn.Linear(256, 256, bias=False))
    model.add_module("lm_head", nn.Linear(256, 10, bias=False))
    before = model_bytes(model)
    assert quantize_linears(model) == ["up_proj"]
    assert type(model.lm_head) is nn.Linear
    after = model_bytes(model)
    # 256*256 fp32 weights (256 KiB) -> 32 KiB packed + 4 KiB absmax
    assert before - after == 256 * 256 * 4 - (256 * 256 // 2 + 256 * 256 // 64 * 4)
    with pytest.raises(InputError, match="no nn.Linear"):
        quantize_linears(nn.Sequential(nn.ReLU()))
