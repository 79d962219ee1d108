"""Properties of ΔM/ΔD that hold for any weights: range, invariances, exact zeros, and results
that do not depend on block size, shard layout or device."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import dora_diag
from ckpt_helpers import write_checkpoint
from kernel_helpers import kernel

pytestmark = pytest.mark.usefixtures("fast_path")

settings.register_profile("properties", deadline=None, max_examples=40, derandomize=True)
PROFILE = settings.get_profile("properties")

shapes = st.tuples(st.integers(1, 6), st.integers(1, 24))
# Weights of any sign and a wide range of scales, with exact zeros; no NaN/Inf (tested elsewhere).
values = st.one_of(st.just(0.0), st.floats(-1e3, 1e3, allow_nan=False, width=32).filter(lambda x: abs(x) > 1e-6))


@st.composite
def pairs(draw, min_rows: int = 1):
    """(a, c) float32 matrices of one shape: c is a, a perturbation of a, or unrelated."""
    shape = draw(shapes.filter(lambda s: s[0] >= min_rows))
    a = torch.from_numpy(draw(arrays(np.float32, shape, elements=values)))
    kind = draw(st.sampled_from(["unrelated", "perturbed", "scaled"]))
    if kind == "unrelated":
        c = torch.from_numpy(draw(arrays(np.float32, shape, elements=values)))
    else:
        eps = draw(st.sampled_from([1e-6, 1e-3, 1e-1]))
        noise = torch.from_numpy(draw(arrays(np.float32, shape, elements=st.floats(-1, 1, width=32))))
        c = a * (1 + eps * noise) if kind == "scaled" else a + eps * noise * a.abs().mean()
    return a, c


def reference_dd(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    a, c = a.double(), c.double()
    return 1 - (a * c).sum(1) / (a.norm(dim=1) * c.norm(dim=1))


def live_rows(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (a.double().norm(dim=1) > 0) & (c.double().norm(dim=1) > 0)


@PROFILE
@given(pairs(), st.sampled_from(["out", "in"]))
def test_delta_d_is_in_0_2_and_matches_float64(pair, axis):
    a, c = pair
    ch = kernel(a, c, axis)
    assert bool(((ch.dd >= 0) & (ch.dd <= 2)).all())
    assert not bool(ch.nonfinite.any())
    if axis == "out":
        live = live_rows(a, c)
        assert torch.equal(ch.zero, ~live)
        torch.testing.assert_close(ch.dd[live], reference_dd(a, c)[live], rtol=1e-3, atol=1e-6)


@PROFILE
@given(pairs(), st.lists(st.integers(-20, 20), min_size=6, max_size=6), st.booleans())
def test_delta_d_is_invariant_to_positive_row_scaling(pair, exponents, scale_base):
    """Scaling a channel by s > 0 (here 2^k, up to ~1e6) changes its magnitude, not its direction."""
    a, c = pair
    s = torch.tensor([2.0 ** e for e in exponents[: a.shape[0]]]).unsqueeze(1)
    scaled = kernel(a * s, c) if scale_base else kernel(a, c * s)
    torch.testing.assert_close(scaled.dd, kernel(a, c).dd, rtol=1e-3, atol=1e-6)


@PROFILE
@given(arrays(np.float32, shapes, elements=values), st.integers(0, 2**31 - 1))
def test_rotations_within_rows_keep_magnitudes(a, seed):
    """An orthogonal map of each row (here one random rotation of R^cols) changes no row norm:
    ΔM = 0 to rounding, and 1 - cos is that of the rotated vector."""
    a = torch.from_numpy(a)
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(a.shape[1], a.shape[1], generator=g, dtype=torch.float64))
    c = a.double() @ q
    ch = kernel(a.double(), c)
    norms = a.double().norm(dim=1)
    assert bool((ch.dm.abs() <= 1e-6 * norms + 1e-30).all())
    live = live_rows(a, c)
    torch.testing.assert_close(ch.dd[live], reference_dd(a, c)[live], rtol=1e-3, atol=1e-6)


@PROFILE
@given(arrays(np.float32, shapes, elements=values), st.sampled_from(["out", "in"]))
def test_identical_inputs_give_exact_zeros(a, axis):
    a = torch.from_numpy(a)
    ch = kernel(a, a.clone(), axis)
    assert bool((ch.dm == 0).all()) and bool((ch.dd == 0).all())


@PROFILE
@given(pairs(min_rows=2), st.integers(2, 6), st.sampled_from(["out", "in"]))
def test_row_blocks_do_not_change_results(pair, blocks, axis):
    a, c = pair
    one, many = kernel(a, c, axis), kernel(a, c, axis, blocks=min(blocks, a.shape[0]))
    torch.testing.assert_close(many.dd, one.dd, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(many.dm, one.dm, rtol=1e-4, atol=1e-6 * float(one.m0.max()) + 1e-30)


# ---- end to end ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """One base and the same fine-tuned weights saved as 1, 2 and 3 shards (LLaMA names, bf16 and fp32)."""
    root = tmp_path_factory.mktemp("layouts")
    g = torch.Generator().manual_seed(3)
    base = {}
    for layer in range(3):
        for m, rows, dtype in (("q_proj", 24, torch.float32), ("k_proj", 8, torch.bfloat16)):
            base[f"model.layers.{layer}.self_attn.{m}.weight"] = torch.randn(rows, 40, generator=g).to(dtype)
    ft = {k: (v.float() + 1e-2 * torch.randn(v.shape, generator=g)).to(v.dtype) for k, v in base.items()}
    cfg = {"model_type": "llama"}
    b = write_checkpoint(root / "base", base, cfg)
    return b, {k: write_checkpoint(root / f"ft{k}", ft, cfg, shards=k) for k in (1, 2, 3)}


def _numbers(analysis) -> pd.DataFrame:
    t = analysis.table.drop(columns=["run", "checkpoint"]).set_index("tensor").sort_index()
    return t[["delta_m", "delta_d", "rel_delta_m", "zero_rows"]]


@settings(PROFILE, max_examples=15)
@given(st.integers(1, 8192), st.sampled_from([1, 2, 3]), st.sampled_from(["out", "in"]))
def test_block_size_and_shard_layout_do_not_change_results(layouts, block_bytes, shards, axis):
    b, ft = layouts
    expected = _numbers(dora_diag.compare(b, ft[1], axis=axis, device="cpu"))
    got = _numbers(dora_diag.compare(b, ft[shards], axis=axis, device="cpu", block_bytes=block_bytes))
    pd.testing.assert_frame_equal(got, expected, rtol=1e-6)


def test_identical_checkpoints_give_exact_zeros(layouts):
    b, _ = layouts
    t = dora_diag.compare(b, b, device="cpu").table
    assert (t["delta_m"] == 0).all() and (t["delta_d"] == 0).all() and (t["rel_delta_m"] == 0).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("axis", ["out", "in"])
def test_cuda_matches_cpu_for_full_checkpoints(layouts, axis):
    b, ft = layouts
    cpu = _numbers(dora_diag.compare(b, ft[2], axis=axis, device="cpu"))
    gpu = _numbers(dora_diag.compare(b, ft[2], axis=axis, device="cuda", block_bytes=512))
    pd.testing.assert_frame_equal(gpu, cpu, rtol=1e-6)
    assert not math.isnan(float(gpu["delta_d"].min()))
