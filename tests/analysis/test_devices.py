"""The streaming engine on every device against the float64 reference: each element type and
pairing, changes small enough for the refine path, exact zeros, runs whose base blocks serve
several checkpoints (CUDA: pinned buffers per target, in two sets) and blocks far smaller than
a tensor. The CPU cases run everywhere; the CUDA ones, the same assertions, where a GPU is
(`benchmarks/gpu_check.sh`)."""

from __future__ import annotations

import pytest
import torch

import dora_diag
from ckpt_helpers import reference_changes, write_checkpoint

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])]
PAIRS = {   # name -> (base dtype, fine-tuned dtype)
    "bf16": (torch.bfloat16, torch.bfloat16), "fp16": (torch.float16, torch.float16),
    "fp32": (torch.float32, torch.float32), "bf16-fp32": (torch.bfloat16, torch.float32),
    "fp8": (torch.float8_e4m3fn, torch.float8_e4m3fn),
}
CFG = {"model_type": "llama", "hidden_size": 40, "num_attention_heads": 4}


def _weights(seed: int, dtype, scale: float, layers: int = 3, base: dict | None = None) -> dict[str, torch.Tensor]:
    """LLaMA-named q/v projections (24 x 40): random, or ``base`` plus ``scale``-relative noise."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for layer in range(layers):
        for m in ("q_proj", "v_proj"):
            name = f"model.layers.{layer}.self_attn.{m}.weight"
            w = torch.randn(24, 40, generator=g, dtype=torch.float64)
            if base is not None:
                w = base[name].double() * (1 + scale * torch.randn(24, 40, generator=g, dtype=torch.float64))
            out[name] = w.to(dtype)
    return out


def _check_against_reference(analysis, base: dict, fts: dict[str, dict], axis: str) -> None:
    t = analysis.table
    assert len(t) == len(base) * len(fts)
    for row in t.itertuples():
        a, c = base[row.tensor], fts[row.checkpoint][row.tensor]
        if axis == "in":
            a, c = a.double().T, c.double().T
        want = reference_changes(a, c)
        assert row.delta_m == pytest.approx(want["delta_m"], rel=1e-6, abs=1e-12), row.tensor
        assert row.delta_d == pytest.approx(want["delta_d"], rel=1e-3, abs=1e-12), row.tensor


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("axis", ["out", "in"])
def test_each_element_type_against_float64(tmp_path, device, pair, axis):
    base_dtype, ft_dtype = PAIRS[pair]
    base = _weights(0, base_dtype, 0)
    ft = _weights(1, ft_dtype, 2e-2, base=base)
    b, f = write_checkpoint(tmp_path / "b", base, CFG), write_checkpoint(tmp_path / "f", ft, CFG)
    a = dora_diag.compare(b, f, device=device, axis=axis, block_bytes=512)
    _check_against_reference(a, base, {"f": ft}, axis)


@pytest.mark.parametrize("device", DEVICES)
def test_tiny_changes_take_the_refine_path_and_identical_tensors_give_exact_zeros(tmp_path, device):
    """fp32 changes of 1e-6 relative: 1 - cos ~1e-12 is below what the sums resolve in fp32."""
    base = _weights(0, torch.float32, 0)
    ft = _weights(2, torch.float32, 1e-6, base=base)
    ft["model.layers.0.self_attn.q_proj.weight"] = base["model.layers.0.self_attn.q_proj.weight"].clone()
    b, f = write_checkpoint(tmp_path / "b", base, CFG), write_checkpoint(tmp_path / "f", ft, CFG)
    a = dora_diag.compare(b, f, device=device, block_bytes=512)
    _check_against_reference(a, base, {"f": ft}, "out")
    same = a.table[a.table["tensor"] == "model.layers.0.self_attn.q_proj.weight"].iloc[0]
    assert same.delta_m == 0.0 and same.delta_d == 0.0
    assert (a.table["delta_d"] > 0).sum() == len(base) - 1


@pytest.mark.parametrize("device", DEVICES)
def test_a_run_of_checkpoints_shares_each_base_block(tmp_path, device):
    """Three checkpoints of mixed element types against one base, in blocks of a few rows."""
    base = _weights(0, torch.bfloat16, 0)
    fts = {f"checkpoint-{i}": _weights(i, dtype, 1e-2 * i, base=base)
           for i, dtype in ((1, torch.bfloat16), (2, torch.float32), (3, torch.float16))}
    b = write_checkpoint(tmp_path / "base", base, CFG)
    for name, ft in fts.items():
        write_checkpoint(tmp_path / "run" / name, ft, CFG)
    a = dora_diag.compare(b, f"run={tmp_path / 'run'}", device=device, block_bytes=256)
    _check_against_reference(a, base, fts, "out")
    assert a.meta.bytes_read == sum(t.numel() * t.element_size() for w in (base, *fts.values()) for t in w.values())
