"""Row norms of W0 + s·B·A without building the dense (out, in) matrix.

Shapes: W0 (out, in), A (r, in), B (out, r). All norms run over dim=1 of the (out, in) matrix,
one per output channel::

    ‖W0_i + s(BA)_i‖² = ‖W0_i‖² + 2s·Σ_r B_ir (W0 Aᵀ)_ir + s²·B_i (A Aᵀ) B_iᵀ

‖W0_i‖² is cached (W0 is frozen). The remaining work is W0·Aᵀ (out·in·r multiply-adds, one read
of W0) plus r-sized products; PEFT instead forms B·A and W0 + s·BA (two (out, in) temporaries)
and reads them again for the norm. The expansion loses relative precision only where the new
row nearly cancels W0's (‖W0_i + s(BA)_i‖ ≪ ‖W0_i‖), which fine-tuning does not produce;
``dense_row_norm`` is the exact reference used for merging.

Which is faster depends on size, so the detached norm (no graph to keep) takes the fused dense
route for small W0 and the factored one for large W0; the exact-gradient norm always uses the
factored form, whose graph holds (out, r) tensors instead of an (out, in) one.
"""

from __future__ import annotations

import torch

# Floor for a row norm: all-zero rows (e.g. 511 of them in Llama-3.1-8B's o_proj) give
# magnitude/norm = 0/eps = 0 instead of PEFT's 0/0 = NaN (PEFT issue #2049).
NORM_EPS = 1e-12


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 for half-precision tensors, else the tensor's own (float32 or float64) dtype."""
    return torch.promote_types(t.dtype, torch.float32)


def squared_row_norms(w0: torch.Tensor) -> torch.Tensor:
    """‖W0_i‖² for W0 (out, in), summed over dim=1 in float64, returned in ``compute_dtype(w0)`` (out,)."""
    return w0.detach().double().pow(2).sum(dim=1).to(compute_dtype(w0))


def factored_row_norm(w0: torch.Tensor, w0_sq: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """‖W0 + scale·B·A‖ per row, (out,), in w0_sq's dtype, floored at ``NORM_EPS``.

    w0 (out, in), w0_sq (out,) = squared_row_norms(w0), a (r, in), b (out, r). Differentiable
    in a and b (W0 is a constant), so it serves both the detached and the exact-gradient norm.
    """
    w0, a, b = (t.to(w0_sq.dtype) for t in (w0, a, b))
    w0_at = w0 @ a.t()                                                    # (out, r)
    inner = torch.addmm(w0_at, b, a @ a.t(), beta=2.0 * scale, alpha=scale * scale)  # 2s·W0Aᵀ + s²·B(AAᵀ)
    sq = w0_sq + (b * inner).sum(dim=1)
    return sq.clamp_min(NORM_EPS * NORM_EPS).sqrt()


def fused_dense_row_norm(w0: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """‖W0 + scale·B·A‖ per row (out,) through one (out, in) temporary built by a single addmm.

    Measured faster than the factored form for W0 up to a few million entries on CPU (fewer,
    larger kernels; the matrix stays in cache), slower beyond (``FACTORED_MIN_ELEMENTS``).
    """
    dtype = compute_dtype(w0)
    return dense_row_norm(torch.addmm(w0.to(dtype), b.to(dtype), a.to(dtype), alpha=scale))


# W0 sizes (out·in) from which the factored norm beats the fused dense one (benchmarks/bench_layers.py:
# fused ahead at MiniLM sizes up to 1536x384, factored ahead from 4096x4096; 2048x2048 lies between).
FACTORED_MIN_ELEMENTS = 2048 * 2048


def dense_row_norm(weight: torch.Tensor) -> torch.Tensor:
    """‖W_i‖ over dim=1 of a dense (out, in) matrix, floored at ``NORM_EPS`` (out,)."""
    return torch.linalg.vector_norm(weight, dim=1).clamp_min(NORM_EPS)
