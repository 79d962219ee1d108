"""Our LoRA/DoRA layers against PEFT 0.21 on tiny random-init LLaMA (nn.Linear) and GPT-2 (Conv1D).

Same W0, A, B, m and input: forward logits, gradients of A, B and m, and merged weights must agree.
B and m are randomised (at init B = 0 and m = ‖W0‖, which would hide most of the maths).
"""

from __future__ import annotations

import copy

import peft
import pytest
import torch
from tiny_peft import MODELS

from dora_diag.adapters.inject import AdapterConfig, adapter_layers, apply_adapters, merge_adapters

TARGETS = {"llama": ("q_proj", "v_proj", "down_proj"), "gpt2": ("c_attn", "c_fc")}


def _pair(arch: str, use_dora: bool, use_rslora: bool, dtype: torch.dtype, rank: int = 4):
    """(ours, peft_model, ours' wrapped names) sharing W0 and randomised A, B, m."""
    torch.manual_seed(0)
    base = MODELS[arch]().to(dtype).eval()
    ours = copy.deepcopy(base)
    lcfg = peft.LoraConfig(r=rank, lora_alpha=8, target_modules=list(TARGETS[arch]), use_dora=use_dora,
                           use_rslora=use_rslora, fan_in_fan_out=arch == "gpt2")
    theirs = peft.get_peft_model(base, lcfg).eval()
    names = apply_adapters(ours, AdapterConfig(method="dora" if use_dora else "lora", rank=rank, alpha=8,
                                               use_rslora=use_rslora, targets=TARGETS[arch]))
    g = torch.Generator().manual_seed(1)
    for name, layer in adapter_layers(ours).items():
        ref = theirs.base_model.model.get_submodule(name)
        with torch.no_grad():
            ref.lora_B["default"].weight.copy_(0.3 * torch.randn(ref.lora_B["default"].weight.shape, generator=g))
            layer.lora_A.copy_(ref.lora_A["default"].weight)
            layer.lora_B.copy_(ref.lora_B["default"].weight)
            if use_dora:
                mag = ref.lora_magnitude_vector["default"].weight
                mag.mul_(1 + 0.2 * torch.rand(mag.shape, generator=g, dtype=mag.dtype))
                layer.magnitude.copy_(mag)
    return ours, theirs, names


def _run(model, ids, weights):
    model.zero_grad()
    logits = model(input_ids=ids).logits
    (logits * weights).sum().backward()
    return logits.detach()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("use_dora", [True, False], ids=["dora", "lora"])
@pytest.mark.parametrize("use_rslora", [False, True], ids=["alpha_r", "rslora"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-11)], ids=["fp32", "fp64"])
def test_forward_gradients_and_merge_equal_peft(arch, use_dora, use_rslora, dtype, tol):
    ours, theirs, names = _pair(arch, use_dora, use_rslora, dtype)
    assert len(names) == 2 * len(TARGETS[arch])
    ids = torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(2))
    weights = torch.randn(2, 7, 96, generator=torch.Generator().manual_seed(3), dtype=dtype)

    y_ours, y_theirs = _run(ours, ids, weights), _run(theirs, ids, weights)
    scale = y_theirs.abs().max()
    torch.testing.assert_close(y_ours, y_theirs, rtol=0, atol=tol * scale)

    for name, layer in adapter_layers(ours).items():
        ref = theirs.base_model.model.get_submodule(name)
        pairs = [(layer.lora_A.grad, ref.lora_A["default"].weight.grad),
                 (layer.lora_B.grad, ref.lora_B["default"].weight.grad)]
        if use_dora:
            pairs.append((layer.magnitude.grad, ref.lora_magnitude_vector["default"].weight.grad))
        for ours_grad, ref_grad in pairs:
            assert ref_grad.abs().max() > 0
            torch.testing.assert_close(ours_grad, ref_grad, rtol=0, atol=tol * ref_grad.abs().max(), msg=name)

    merge_adapters(ours)
    merged = theirs.merge_and_unload()
    ours_sd, ref_sd = ours.state_dict(), merged.state_dict()
    assert ours_sd.keys() == ref_sd.keys()
    for key in ours_sd:
        torch.testing.assert_close(ours_sd[key], ref_sd[key], rtol=0, atol=tol * ref_sd[key].abs().max(), msg=key)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, y_theirs, rtol=0, atol=tol * scale)


def test_dropout_training_path_equals_peft():
    """With active dropout PEFT runs the base path on x and the DoRA correction on dropout(x); so do we."""
    ours, theirs, _ = _pair("llama", True, False, torch.float64)
    for name, layer in adapter_layers(ours).items():
        layer.dropout = torch.nn.Dropout(0.5)
        theirs.base_model.model.get_submodule(name).lora_dropout["default"] = torch.nn.Dropout(0.5)
    ours.train(), theirs.train()
    ids = torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(2))
    weights = torch.randn(2, 7, 96, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.manual_seed(5)
    y_ours = _run(ours, ids, weights)
    torch.manual_seed(5)
    y_theirs = _run(theirs, ids, weights)
    torch.testing.assert_close(y_ours, y_theirs, rtol=0, atol=1e-11 * y_theirs.abs().max())
    for name, layer in adapter_layers(ours).items():
        ref = theirs.base_model.model.get_submodule(name).lora_magnitude_vector["default"].weight.grad
        torch.testing.assert_close(layer.magnitude.grad, ref, rtol=0, atol=1e-11 * ref.abs().max())
