"""Factor sums against float64 references, on both products: factored (r small) and the dense
block delta (r as wide as the layer or wider, where r x r would be the largest thing in memory)."""

from __future__ import annotations

import pytest
import torch

from dora_diag.metrics import lowrank
from dora_diag.metrics.lowrank import factor_sums


def _reference(w: torch.Tensor, L: torch.Tensor, R: torch.Tensor, axis: str) -> tuple[torch.Tensor, ...]:
    w, lr = w.double(), L.double() @ R.double()
    dim = 1 if axis == "out" else 0
    return (w.square().sum(dim), (w * lr).sum(dim), lr.square().sum(dim))


@pytest.mark.parametrize("axis", ["out", "in"])
@pytest.mark.parametrize("n,cols,r", [(8, 16, 2), (8, 16, 16), (8, 16, 64), (3, 5, 4096), (64, 4, 3)])
def test_factor_sums_match_float64(axis, n, cols, r):
    g = torch.Generator().manual_seed(n * cols + r)
    w, L, R = torch.randn(n, cols, generator=g), torch.randn(n, r, generator=g) / r, torch.randn(r, cols, generator=g)
    got = factor_sums(w, L, R, axis)
    for value, ref in zip((got.a2, got.g, got.q), _reference(w, L, R, axis)):
        torch.testing.assert_close(value, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", ["out", "in"])
def test_a_huge_rank_never_builds_r_by_r(axis, monkeypatch):
    """r = 32768 on an 8 x 16 block: the dense delta (8 x 16) is used, never a 32768² product."""
    g = torch.Generator().manual_seed(0)
    r = 32768
    w, L, R = torch.randn(8, 16, generator=g), torch.randn(8, r, generator=g) / r, torch.randn(r, 16, generator=g)
    real_matmul = torch.Tensor.__matmul__
    largest = []

    def watched(a, b):
        out = real_matmul(a, b)
        largest.append(out.numel())
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", watched)
    got = factor_sums(w, L, R, axis)
    assert max(largest) <= 8 * 16
    torch.testing.assert_close(got.q, _reference(w, L, R, axis)[2], rtol=1e-5, atol=1e-6)


def test_the_cheaper_product_is_chosen():
    w = torch.zeros(8, 16)
    assert not lowrank._dense_is_smaller(w, torch.zeros(8, 2), "out")
    assert lowrank._dense_is_smaller(w, torch.zeros(8, 16), "out")
    assert lowrank._dense_is_smaller(w, torch.zeros(8, 32768), "in")


def test_expert_factors_follow_peft_param_wrapper():
    """ΔW_e = B_e @ A_e equals PEFT's ``einsum("o r e, e r i -> e o i")`` of B read as (out, r, E)
    and A as (E, r, in); E, r, in and out all distinct so that any other reading differs."""
    g = torch.Generator().manual_seed(0)
    experts, r, n_in, n_out = 3, 2, 5, 7
    A = torch.randn(r * experts, n_in, generator=g, dtype=torch.float64)
    B = torch.randn(n_out, r * experts, generator=g, dtype=torch.float64)
    peft = torch.einsum("ore,eri->eoi", B.reshape(n_out, r, experts), A.reshape(experts, r, n_in))
    for e in range(experts):
        B_e, A_e = lowrank.expert_factors(A, B, experts, e)
        assert B_e.shape == (n_out, r) and A_e.shape == (r, n_in)
        torch.testing.assert_close(B_e @ A_e, peft[e], rtol=0, atol=1e-12)
