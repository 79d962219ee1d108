"""LoRA, DoRA (and its paper variants) as wrappers around a frozen dense layer.

Shapes: x (..., in) -> y (..., out). W0 is handled as (out, in) (see ``dense``), A (r, in),
B (out, r), magnitude m (out,). Every norm is a row norm over dim=1 of an (out, in) matrix,
i.e. one per OUTPUT channel.

The DoRA forward matches PEFT 0.21's ``DoraLinearLayer`` term for term:
without active dropout  y = m/‖W0 + sBA‖ ⊙ (x W0ᵀ + s·(x Aᵀ) Bᵀ) + b
with active dropout     y = x W0ᵀ + b + (m/n - 1) ⊙ x' W0ᵀ + m/n ⊙ s·(x' Aᵀ) Bᵀ,   x' = dropout(x)
but computes x W0ᵀ once, and takes the norm n without a graph (detached) from one fused
addmm for small W0 or from the factors for large W0 (see ``norms``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .dense import features, weight_out_in
from .norms import (FACTORED_MIN_ELEMENTS, compute_dtype, dense_row_norm, factored_row_norm,
                    fused_dense_row_norm, squared_row_norms)


def lora_scaling(alpha: float, rank: int, use_rslora: bool) -> float:
    """s = alpha / r, or alpha / sqrt(r) for rsLoRA."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def adapter_dtype(base: nn.Module) -> torch.dtype:
    """Adapter parameters live in float32 when the base is half precision (as PEFT's autocast)."""
    return compute_dtype(base.weight)


class AdapterLayer(nn.Module):
    """A frozen dense ``base_layer`` plus trainable extras; subclasses define ``forward_2d``."""

    def __init__(self, base: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.base_layer = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.in_features, self.out_features = features(base)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def w0(self) -> torch.Tensor:
        """The frozen base weight, (out, in)."""
        return weight_out_in(self.base_layer)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.forward_2d(x.reshape(-1, self.in_features))
        return y.view(*x.shape[:-1], self.out_features)

    def forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, in) -> y (N, out)."""
        raise NotImplementedError

    def merged_weight(self) -> torch.Tensor:
        """The dense (out, in) weight that makes the plain base layer compute this adapter's forward."""
        raise NotImplementedError

    def _dropped(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x) if self.training else x


def _init_factors(module: nn.Module, rank: int, generator: torch.Generator | None) -> None:
    """lora_A (r, in) Kaiming-uniform as nn.Linear's default (PEFT's init), lora_B (out, r) = 0."""
    dtype, device = adapter_dtype(module.base_layer), module.base_layer.weight.device
    a = torch.empty(rank, module.in_features, dtype=dtype, device=device)
    nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
    module.lora_A = nn.Parameter(a)
    module.lora_B = nn.Parameter(torch.zeros(module.out_features, rank, dtype=dtype, device=device))


class LoraLinear(AdapterLayer):
    """y = x W0ᵀ + b + s·(dropout(x) Aᵀ) Bᵀ."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
                 use_rslora: bool = False, generator: torch.Generator | None = None):
        super().__init__(base, dropout)
        self.rank, self.scaling = rank, lora_scaling(alpha, rank, use_rslora)
        _init_factors(self, rank, generator)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(A (r, in), B (out, r), s) with ΔW = s·B·A."""
        return self.lora_A, self.lora_B, self.scaling

    def forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.lora_A.to(x.dtype), self.lora_B.to(x.dtype)
        y = F.linear(x, self.w0, self.bias)
        return torch.addmm(y, F.linear(self._dropped(x), a), b.t(), alpha=self.scaling)

    def merged_weight(self) -> torch.Tensor:
        with torch.no_grad():
            a, b, s = self.factors()
            dtype = compute_dtype(self.w0)
            return self.w0.to(dtype) + s * (b.to(dtype) @ a.to(dtype))


def _refresh_after_load(module: "DoraBase", _incompatible_keys) -> None:
    module.refresh_base_cache()


class DoraBase(AdapterLayer):
    """m ⊙ V/‖V‖ with V = W0 + s·B·A from ``factors()``; ``None`` factors means V = W0 (magnitude only).

    ``detach_norm`` (default, paper §4.3, PEFT's behaviour) treats ‖V‖ as a constant; False gives
    the exact gradient through it. ‖W0_i‖² is cached (float32, or float64 for a float64 base)
    and refreshed whenever the module is moved/cast or loads a state dict.
    """

    def __init__(self, base: nn.Module, dropout: float, detach_norm: bool, train_magnitude: bool):
        super().__init__(base, dropout)
        self.detach_norm = detach_norm
        self.refresh_base_cache()
        dtype = adapter_dtype(base)
        self.magnitude = nn.Parameter(self.w0_sq.sqrt().to(dtype), requires_grad=train_magnitude)
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def refresh_base_cache(self) -> None:
        """Recompute the cached ‖W0_i‖² (out,) after W0 changed."""
        self.w0_sq = squared_row_norms(self.w0)

    def _apply(self, fn, recurse=True):
        # a .to()/.half() would move or round the cache: recompute it from the moved W0
        super()._apply(fn, recurse)
        self.refresh_base_cache()
        return self

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        raise NotImplementedError

    def row_norm(self, w0: torch.Tensor | None = None) -> torch.Tensor:
        """‖W0 + s·B·A‖ per output row (out,), in ``compute_dtype(W0)``; detached unless ``detach_norm`` is False.

        ``w0`` lets a caller that already holds W0 (out, in) pass it (a quantized base dequantizes on access).
        """
        fac = self.factors()
        if fac is None:
            return self.w0_sq.clamp_min(0).sqrt()
        w0 = self.w0 if w0 is None else w0
        if not self.detach_norm and torch.is_grad_enabled():
            return factored_row_norm(w0, self.w0_sq, *fac)
        with torch.no_grad():
            if w0.numel() < FACTORED_MIN_ELEMENTS:
                return fused_dense_row_norm(w0, *fac)
            return factored_row_norm(w0, self.w0_sq, *fac)

    def forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        w0, bias, fac = self.w0, self.bias, self.factors()
        scale = (self.magnitude / self.row_norm(w0)).to(x.dtype)           # (out,)
        base = F.linear(x, w0)
        if fac is None:
            return torch.addcmul(bias, base, scale) if bias is not None else base * scale
        a, b, s = fac
        a, b = a.to(x.dtype), b.to(x.dtype)
        xd = self._dropped(x)
        if xd is x:
            h = torch.addmm(base, F.linear(x, a), b.t(), alpha=s)          # x W0ᵀ + s x Aᵀ Bᵀ
            return torch.addcmul(bias, h, scale) if bias is not None else h * scale
        base_d = F.linear(xd, w0)
        y = base + scale * torch.addmm(base_d, F.linear(xd, a), b.t(), alpha=s) - base_d
        return y + bias if bias is not None else y

    def merged_weight(self) -> torch.Tensor:
        with torch.no_grad():
            fac, dtype = self.factors(), compute_dtype(self.w0)
            v = self.w0.to(dtype)
            if fac is not None:
                a, b, s = fac
                v = v + s * (b.to(dtype) @ a.to(dtype))
            return (self.magnitude.to(dtype) / dense_row_norm(v)).unsqueeze(1) * v


class DoraLinear(DoraBase):
    """DoRA: m ⊙ (W0 + s·BA)/‖W0 + s·BA‖; ``train_magnitude=False`` is the paper's normalized LoRA."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
                 use_rslora: bool = False, detach_norm: bool = True, train_magnitude: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__(base, dropout, detach_norm, train_magnitude)
        self.rank, self.scaling = rank, lora_scaling(alpha, rank, use_rslora)
        _init_factors(self, rank, generator)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        return self.lora_A, self.lora_B, self.scaling


class MagnitudeOnlyLinear(DoraBase):
    """The paper's reduced granularity: m ⊙ W0/‖W0‖, only m (out,) trains; no dropout (no adapter input)."""

    def __init__(self, base: nn.Module):
        super().__init__(base, 0.0, detach_norm=True, train_magnitude=True)

    def factors(self) -> None:
        return None


def vera_projections(rank: int, max_in: int, max_out: int, generator: torch.Generator | None,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """VeRA's frozen shared random matrices A (r, max_in), B (max_out, r), Kaiming-uniform like PEFT's VeRA."""
    a, b = torch.empty(rank, max_in, dtype=dtype), torch.empty(max_out, rank, dtype=dtype)
    nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
    nn.init.kaiming_uniform_(b, a=math.sqrt(5), generator=generator)
    return a, b


class DVoraLinear(DoraBase):
    """DVoRA: DoRA whose direction update is VeRA's diag(λ_b)·B·diag(λ_d)·A (s = 1).

    ``vera_A`` (r, max_in) and ``vera_B`` (max_out, r) are the shared frozen projections, sliced
    here to (r, in) and (out, r) and kept as non-persistent buffers; λ_d (r,) starts at
    ``d_initial`` and λ_b (out,) at 0 (VeRA's init), so step 0 reproduces W0.
    """

    def __init__(self, base: nn.Module, vera_A: torch.Tensor, vera_B: torch.Tensor, dropout: float = 0.0,
                 detach_norm: bool = True, d_initial: float = 0.1):
        super().__init__(base, dropout, detach_norm, train_magnitude=True)
        dtype, device = adapter_dtype(base), base.weight.device
        self.rank = vera_A.shape[0]
        self.register_buffer("vera_A", vera_A[:, :self.in_features].to(device, dtype), persistent=False)
        self.register_buffer("vera_B", vera_B[:self.out_features].to(device, dtype), persistent=False)
        self.lambda_d = nn.Parameter(torch.full((self.rank,), d_initial, dtype=dtype, device=device))
        self.lambda_b = nn.Parameter(torch.zeros(self.out_features, dtype=dtype, device=device))

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(diag(λ_d)·A (r, in), diag(λ_b)·B (out, r), 1.0)."""
        return self.lambda_d.unsqueeze(1) * self.vera_A, self.lambda_b.unsqueeze(1) * self.vera_B, 1.0
