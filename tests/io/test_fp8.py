"""fp8 weights with scale tensors: dequantized while streaming, checked against float64."""

from __future__ import annotations

import json

import pytest
import torch

import dora_diag
from dora_diag.io.fp8 import Fp8Scale, find_scale
from dora_diag.io.safetensors_file import TensorInfo
from ckpt_helpers import reference_changes, write_checkpoint

Q = "model.layers.{}.self_attn.q_proj.weight"
BLOCK = [4, 8]
FP8_CONFIG = {"model_type": "llama", "quantization_config": {"quant_method": "fp8", "weight_block_size": BLOCK}}


def info(name: str, shape, dtype: str = "F8_E4M3") -> TensorInfo:
    return TensorInfo(name, dtype, tuple(shape), "x.safetensors", 0, 0)


def block_quantize(w: torch.Tensor, block=BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 q, scale_inv) the fine-grained FP8 way: one scale per block, W ~ q * s."""
    rows, cols = w.shape
    s = torch.empty(-(-rows // block[0]), -(-cols // block[1]))
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            part = w[i * block[0]:(i + 1) * block[0], j * block[1]:(j + 1) * block[1]]
            s[i, j] = part.abs().max() / 448
    full = s.repeat_interleave(block[0], 0)[:rows].repeat_interleave(block[1], 1)[:, :cols]
    return (w / full).to(torch.float8_e4m3fn), s


def dequantized(q: torch.Tensor, s: torch.Tensor, block) -> torch.Tensor:
    """float64 reference: every element times the scale of its block, by explicit indices."""
    out = torch.empty(q.shape, dtype=torch.float64)
    for r in range(q.shape[0]):
        for c in range(q.shape[1]):
            out[r, c] = float(q[r, c].float()) * float(s.reshape(-1)[0] if s.numel() == 1 else
                                                      s.reshape(s.shape[0], -1)[r // block[0], c // block[1]])
    return out


@pytest.mark.parametrize("layout", ["block", "row", "tensor"])
def test_dequantize_matches_an_explicit_loop_on_unaligned_row_blocks(layout):
    g = torch.Generator().manual_seed(0)
    q = (torch.randn(10, 20, generator=g) * 50).to(torch.float8_e4m3fn)
    s = {"block": torch.rand(3, 3, generator=g), "row": torch.rand(10, 1, generator=g),
         "tensor": torch.rand(1, generator=g)}[layout]
    tensors = {"w": info("w", q.shape), "w_scale_inv": info("w_scale_inv", s.shape, "F32")}
    scale = find_scale("w", tensors, FP8_CONFIG)
    assert isinstance(scale, Fp8Scale)
    ref = dequantized(q, s, scale.block)
    grid = Fp8Scale.grid(s)
    for start, stop in [(0, 3), (3, 7), (7, 10)]:   # blocks that start inside a scale block
        got = scale.dequantize(q[start:stop], start, grid)
        torch.testing.assert_close(got.double(), ref[start:stop], rtol=1e-7, atol=0)


def test_scale_layouts_not_understood_are_reported_not_guessed():
    tensors = {"w": info("w", (10, 20)), "w_scale": info("w_scale", (5, 5), "F32")}
    assert "fits neither" in find_scale("w", tensors, FP8_CONFIG)
    assert find_scale("w", {"w": info("w", (10, 20), "BF16"), "w_scale": info("w_scale", (1,), "F32")}, {}) is None
    assert find_scale("w", {"w": info("w", (10, 20))}, FP8_CONFIG) is None


def test_compare_dequantizes_base_and_fine_tuned(tmp_path):
    """Base: fine-grained FP8 (block scale_inv); one fine-tune in bf16, one in fp8 with a
    per-row weight_scale. ΔM/ΔD match float64 on the dequantized weights; the scale tensors
    are neither compared nor unmatched, and no fp8 warning is left."""
    g = torch.Generator().manual_seed(1)
    base, bf16, rowwise, refs = {}, {}, {}, {}
    for layer in range(3):
        w = torch.randn(10, 20, generator=g)
        q, s = block_quantize(w)
        base[Q.format(layer)], base[Q.format(layer) + "_scale_inv"] = q, s
        w0 = dequantized(q, s, BLOCK)
        w1 = w0 + 0.02 * torch.randn(10, 20, generator=g, dtype=torch.float64)
        bf16[Q.format(layer)] = w1.to(torch.bfloat16)
        row_scale = w1.abs().amax(1, keepdim=True).float() / 448
        rowwise[Q.format(layer)] = (w1 / row_scale.double()).to(torch.float8_e4m3fn)
        rowwise[Q.format(layer) + "_scale"] = row_scale
        refs[layer] = (w0, bf16[Q.format(layer)].double(), dequantized(rowwise[Q.format(layer)], row_scale, (1, 20)))
    b = write_checkpoint(tmp_path / "base", base, FP8_CONFIG)
    f1 = write_checkpoint(tmp_path / "bf16", bf16, {"model_type": "llama"})
    f2 = write_checkpoint(tmp_path / "rowwise", rowwise, {"model_type": "llama", "quantization_config":
                                                          {"quant_method": "fbgemm_fp8"}})
    a = dora_diag.compare(b, f"bf16={f1}", f"rowwise={f2}", block_bytes=60)   # 3 rows per block
    for run, which in (("bf16", 1), ("rowwise", 2)):
        for layer in range(3):
            row = a.table[(a.table["run"] == run) & (a.table["layer"] == layer)].iloc[0]
            ref = reference_changes(refs[layer][0], refs[layer][which])
            assert row["delta_m"] == pytest.approx(ref["delta_m"], rel=1e-5)
            assert row["delta_d"] == pytest.approx(ref["delta_d"], rel=1e-4)
    reasons = {s["tensor"]: s["reason"] for s in a.meta.skipped}
    assert reasons[Q.format(0) + "_scale_inv"] == "fp8 scale (applied to its weight)"
    assert list(a.meta.unmatched) == []
    assert not any("fp8" in w for w in a.meta.warnings)
    assert "NaN" not in json.dumps(a.meta.to_json())


def test_unknown_scale_layout_compares_raw_values_with_a_warning(tmp_path):
    g = torch.Generator().manual_seed(2)
    q = (torch.randn(8, 16, generator=g) * 20).to(torch.float8_e4m3fn)
    base = {Q.format(0): q, Q.format(0) + "_scale_inv": torch.rand(3, 3, generator=g)}
    ft = {Q.format(0): (q.float() + 0.5 * torch.randn(8, 16, generator=g)).to(torch.float8_e4m3fn)}
    b = write_checkpoint(tmp_path / "b", base, FP8_CONFIG)
    f = write_checkpoint(tmp_path / "f", ft, {"model_type": "llama"})
    a = dora_diag.compare(b, f)
    assert any("layout not understood" in w and Q.format(0) in w for w in a.meta.warnings)
    ref = reference_changes(q.float(), ft[Q.format(0)].float())
    assert a.table.iloc[0]["delta_d"] == pytest.approx(ref["delta_d"], rel=1e-4)
