"""The ΔM/ΔD kernel against an independent float64 reference, including tiny changes."""

from __future__ import annotations

import pytest
import torch

from ckpt_helpers import reference_changes
from dora_diag.metrics.kernels import block_sums, unsure_c2
from kernel_helpers import kernel

pytestmark = pytest.mark.usefixtures("fast_path")


def per_row_reference(a: torch.Tensor, c: torch.Tensor):
    a, c = a.double(), c.double()
    m0, m1 = a.norm(dim=1), c.norm(dim=1)
    return m1 - m0, 1 - (a * c).sum(1) / (m0 * m1)


# A gaussian perturbation of ΔD 1e-8 rounds away in half precision; ulp-level changes of
# bf16/fp16 weights are covered by test_ulp_level_changes_of_half_precision_weights.
GAUSSIAN_CASES = [(torch.float32, 1e-8)] + [(dt, t) for dt in (torch.bfloat16, torch.float16, torch.float32)
                                           for t in (1e-6, 1e-4, 1e-2)]


@pytest.mark.parametrize("dtype,target", GAUSSIAN_CASES)
def test_delta_d_matches_float64_reference_for_tiny_changes(dtype, target):
    """Width 4096: ΔD within 1e-3 relative of the fp64 reference whenever it is >= 1e-8."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(32, 4096, generator=g).to(dtype)
    # 1 - cos ≈ |d_perp|^2 / (2|a|^2): pick the perturbation size for the target ΔD.
    eps = (2 * target) ** 0.5
    c = (a.double() + eps * torch.randn(32, 4096, generator=g, dtype=torch.float64)).to(dtype)
    dm_ref, dd_ref = per_row_reference(a, c)
    live = dd_ref >= 1e-8
    assert live.sum() >= 8, "the perturbation did not survive rounding to this dtype"
    ch = kernel(a, c)
    assert (ch.dd >= 0).all()
    torch.testing.assert_close(ch.dd[live], dd_ref[live], rtol=1e-3, atol=0)
    torch.testing.assert_close(ch.dm, dm_ref, rtol=1e-3, atol=1e-7 * float(a.double().norm(dim=1).max()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("flips", [1, 4, 64])
def test_ulp_level_changes_of_half_precision_weights(dtype, flips):
    """Fine-tuned bf16/fp16 rows often differ from the base by a few ulps in a few elements:
    ΔD around 1e-8 and below, where only an exact difference keeps any digits."""
    g = torch.Generator().manual_seed(6)
    a = torch.randn(32, 4096, generator=g).to(dtype)
    bits = a.view(torch.int16).clone()
    cols = torch.randint(0, 4096, (32, flips), generator=g)
    bits.scatter_add_(1, cols, torch.ones(32, flips, dtype=torch.int16))  # +1 ulp (same sign)
    c = bits.view(dtype)
    dm_ref, dd_ref = per_row_reference(a, c)
    live = dd_ref >= 1e-8
    ch = kernel(a, c)
    assert (ch.dd >= 0).all()
    if live.any():
        torch.testing.assert_close(ch.dd[live], dd_ref[live], rtol=1e-3, atol=0)
    assert float((ch.dd - dd_ref).abs().max()) < 1e-3 * max(float(dd_ref.max()), 1e-8)
    torch.testing.assert_close(ch.dm, dm_ref, rtol=1e-3, atol=1e-9)


def test_naive_fp32_formula_would_fail_here():
    """Guard against a vacuous precision test: the naive fp32 formula is off at ΔD ~ 1e-8."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(32, 4096, generator=g)
    c = (a.double() + 1.4e-4 * torch.randn(32, 4096, generator=g, dtype=torch.float64)).float()
    _, dd_ref = per_row_reference(a, c)
    naive = 1 - (a * c).sum(1) / (a.norm(dim=1) * c.norm(dim=1))
    assert ((naive.double() - dd_ref).abs() / dd_ref).max() > 1e-2


def test_identical_rows_give_exact_zeros():
    a = torch.randn(8, 300, dtype=torch.bfloat16)
    ch = kernel(a, a.clone())
    assert (ch.dd == 0).all() and (ch.dm == 0).all()


def test_radial_changes_are_refined_and_scale_invariant():
    """A pure rescaling plus a tiny rotation: the difference formula cancels, the chord does not."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(16, 4096, generator=g, dtype=torch.float64)
    c = a + 1e-5 * torch.randn(16, 4096, generator=g, dtype=torch.float64)
    a32, c32 = a.float(), c.float()
    _, dd_ref = per_row_reference(a32, c32)
    for scale in (0.5, 2.0, 7.0):
        ch = kernel(a32, (c32.double() * scale).float())
        assert ch.refine.all()
        torch.testing.assert_close(ch.dd, dd_ref, rtol=2e-2, atol=0)


def test_zero_rows_are_flagged_not_nan():
    a = torch.randn(6, 50)
    c = a + 0.1 * torch.randn(6, 50)
    a[1] = 0
    c[4] = 0
    ch = kernel(a, c)
    assert ch.zero.tolist() == [False, True, False, False, True, False]
    assert torch.isfinite(ch.dd).all() and torch.isfinite(ch.dm).all()
    assert (ch.dd[ch.zero] == 0).all()


@pytest.mark.parametrize("axis", ["out", "in"])
def test_channels_that_lose_most_of_their_norm_resum_c2(axis):
    """|c|^2 derived from sums of a and d cancels when c is ~1000x smaller than a; those
    channels are summed from c itself and match the reference again."""
    g = torch.Generator().manual_seed(6)
    a = torch.randn(8, 4096, generator=g)
    c = (a.double() * 1e-3 + 1e-5 * torch.randn(8, 4096, generator=g, dtype=torch.float64)).float()
    a, c = (a, c) if axis == "out" else (a.T.contiguous(), c.T.contiguous())
    dm_ref, dd_ref = per_row_reference(a, c) if axis == "out" else per_row_reference(a.T, c.T)
    sums = block_sums(a, c, axis)
    assert unsure_c2(sums).all()
    exact_c2 = c.double().square().sum(dim=1 if axis == "out" else 0)
    assert ((sums.c2 - exact_c2).abs() / exact_c2).max() > 1e-2   # derived |c|^2 alone is off
    ch = kernel(a, c, axis)
    torch.testing.assert_close(ch.dm, dm_ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(ch.dd, dd_ref, rtol=1e-4, atol=0)


@pytest.mark.parametrize("blocks", [1, 3, 7])
def test_input_axis_equals_output_axis_of_transpose(blocks):
    g = torch.Generator().manual_seed(4)
    a = torch.randn(40, 24, generator=g)
    c = a + 1e-2 * torch.randn(40, 24, generator=g)
    cols = kernel(a, c, axis="in", blocks=blocks)
    rows = kernel(a.T.contiguous(), c.T.contiguous(), axis="out")
    torch.testing.assert_close(cols.dd, rows.dd, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(cols.dm, rows.dm, rtol=1e-5, atol=1e-9)


def test_tensor_means_match_reference():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(64, 128, generator=g)
    c = a + 3e-3 * torch.randn(64, 128, generator=g)
    ref = reference_changes(a, c)
    ch = kernel(a, c, blocks=4)
    assert float(ch.dm.abs().mean()) == pytest.approx(ref["delta_m"], rel=1e-4)
    assert float(ch.dd.mean()) == pytest.approx(ref["delta_d"], rel=1e-4)


@pytest.mark.parametrize("axis", ["out", "in"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_numpy_blocks_give_the_torch_blocks_sums(axis, dtype):
    """The CPU engine's numpy arrays (bf16 as bits) sum to what torch tensors do, to fp32 rounding
    (of the terms: p = 2<a, d> + |d|^2 may cancel, so its bound is relative to |a||d|)."""
    from dora_diag.arrays import torch_ops

    g = torch.Generator().manual_seed(9)
    a = torch.randn(24, 300, generator=g).to(dtype)
    c = (a.double() + 1e-3 * torch.randn(24, 300, generator=g, dtype=torch.float64)).to(dtype)
    ref = block_sums(a, c, axis)
    got = block_sums(torch_ops().numpy(a), torch_ops().numpy(c), axis)
    for name in ("a2", "c2", "d2"):
        torch.testing.assert_close(torch.from_numpy(getattr(got, name)), getattr(ref, name), rtol=1e-5, atol=0)
    scale = float((ref.a2 * ref.d2).sqrt().max())
    torch.testing.assert_close(torch.from_numpy(got.p), ref.p, rtol=0, atol=1e-5 * scale)
