"""LoRA, DoRA (and its paper variants) as wrappers around a frozen dense layer.

Shapes: x (..., in) -> y (..., out). W0 is handled as (out, in) (see ``dense``), A (r, in),
B (out, r), magnitude m (out,). Every norm is a row norm over dim=1 of an (out, in) matrix,
i.e. one per OUTPUT channel.

The DoRA forward matches PEFT 0.21's ``DoraLinearLayer`` term for term:
without active dropout  y = m/‖W0 + sBA‖ ⊙ (x W0ᵀ + s·(x Aᵀ) Bᵀ) + b
with active dropout     y = x W0ᵀ + b + (m/n - 1) ⊙ x' W0ᵀ + m/n ⊙ s·(x' Aᵀ) Bᵀ,   x' = dropout(x)
but computes x W0ᵀ once, and takes the norm n without a graph (detached) from one fused
addmm for small W0 or from the factors for large W0 (see ``norms``).

Each class is one training method's variant (PEFT's ``LoraVariant`` pattern; the methods table
``dora_diag.methods`` names the class of each method): it builds itself from a ``LayerSpec``
(``build``; ``shared_state`` for what all of a model's layers share), computes its forward and
merged weight, and writes/reads itself as PEFT LoRA/DoRA tensors (``peft_tensors``,
``load_peft_tensors``) with the ``adapter_config.json`` fields it needs (``peft_config_fields``).
DVoRA's class lives in ``dvora``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .dense import features, weight_out_in
from .norms import (FACTORED_MIN_ELEMENTS, compute_dtype, dense_row_norm, factored_row_norm,
                    fused_dense_row_norm, squared_row_norms)


def lora_scaling(alpha: float, rank: int, use_rslora: bool) -> float:
    """s = alpha / r, or alpha / sqrt(r) for rsLoRA."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def adapter_dtype(base: nn.Module) -> torch.dtype:
    """Adapter parameters live in float32 when the base is half precision (as PEFT's autocast)."""
    return compute_dtype(base.weight)


@dataclass(frozen=True)
class LayerSpec:
    """One module's adapter settings, as a layer class's ``build`` takes them."""

    rank: int
    alpha: float
    dropout: float = 0.0
    use_rslora: bool = False
    detach_norm: bool = True
    train_magnitude: bool = True
    generator: torch.Generator | None = None
    shared: object = None            # what the class's ``shared_state`` made for the whole model


class AdapterLayer(nn.Module):
    """A frozen dense ``base_layer`` plus trainable extras; subclasses define ``build``, ``forward_2d``
    and ``merged_weight``, and the low-rank update as ``factors()``.

    PEFT export/import: a layer is written as PEFT LoRA tensors A' (r, in), B' (out, r) whose
    ΔW = scaling·B'·A' equals its own, plus the magnitude (out,) when it has one. The defaults
    here write ``factors()`` and read the layer's own ``lora_A``/``lora_B``.
    """

    has_magnitude = False    # carries DoRA's magnitude vector m (out,), written as lora_magnitude_vector
    magnitude_only = False   # trains m alone (no low-rank update), recorded as such in our metadata
    per_module_rank = True   # False: its layers share state of one rank, so rank/alpha patterns cannot apply

    def __init__(self, base: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.base_layer = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.in_features, self.out_features = features(base)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @classmethod
    def build(cls, base: nn.Module, spec: LayerSpec) -> "AdapterLayer":
        """The layer over ``base`` with ``spec``'s settings (PEFT's ``LoraVariant.init``)."""
        raise NotImplementedError

    @classmethod
    def shared_state(cls, shapes: list[tuple[int, int]], rank: int, generator: torch.Generator) -> object:
        """What every layer of this class in one model shares, given their (in, out) shapes; None: nothing."""
        return None

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

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """(A (r, in), B (out, r), s) with ΔW = s·B·A; None: no low-rank update."""
        raise NotImplementedError

    def _dropped(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x) if self.training else x

    def peft_config_fields(self) -> dict[str, bool]:
        """The adapter_config.json variant flags this layer's export needs (the file sets one when any layer does)."""
        return {"use_dora": self.has_magnitude}

    def peft_tensors(self, rank: int, scaling: float) -> dict[str, torch.Tensor]:
        """{role ("A", "B", "magnitude"): tensor} with which PEFT's forward, scaling B'·A' by
        ``scaling`` (its alpha/r or alpha/sqrt(r)) at rank ``rank``, computes this layer's."""
        a, b = self.peft_factors(rank, scaling)
        return {"A": a, "B": b, "magnitude": self.magnitude} if self.has_magnitude else {"A": a, "B": b}

    def peft_factors(self, rank: int, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(A' (r, in), B' (out, r)) with scaling·B'·A' = s·B·A: our own s folded into B'."""
        a, b, s = self.factors()
        return a, b * (s / scaling)

    def load_peft_tensors(self, parts: dict[str, torch.Tensor], scaling: float, where: str) -> None:
        """Set this layer from the roles ``peft_tensors`` writes (``where`` names it in errors)."""
        if self.has_magnitude != ("magnitude" in parts):
            raise InputError(f"{where}: DoRA magnitude vector {'missing' if self.has_magnitude else 'unexpected'}")
        if self.has_magnitude:
            copy_checked(self.magnitude, parts["magnitude"].reshape(-1), where, "lora_magnitude_vector")
        self.load_peft_factors(parts["A"], parts["B"], scaling, where)

    def load_peft_factors(self, a: torch.Tensor, b: torch.Tensor, scaling: float, where: str) -> None:
        """Set the low-rank update from PEFT's A' (r, in), B' (out, r); the default: they are lora_A, lora_B."""
        copy_checked(self.lora_A, a, where, "lora_A")
        copy_checked(self.lora_B, b, where, "lora_B")


def copy_checked(param: torch.Tensor, value: torch.Tensor, where: str, what: str) -> None:
    """param <- value, InputError when the shapes differ."""
    if tuple(value.shape) != tuple(param.shape):
        raise InputError(f"{where}: {what} has shape {tuple(value.shape)}, the model needs {tuple(param.shape)}")
    param.copy_(value)


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

    @classmethod
    def build(cls, base: nn.Module, spec: LayerSpec) -> "LoraLinear":
        return cls(base, spec.rank, spec.alpha, spec.dropout, spec.use_rslora, spec.generator)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
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

    has_magnitude = True

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

    @classmethod
    def build(cls, base: nn.Module, spec: LayerSpec) -> "DoraLinear":
        return cls(base, spec.rank, spec.alpha, spec.dropout, spec.use_rslora, spec.detach_norm,
                   spec.train_magnitude, spec.generator)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        return self.lora_A, self.lora_B, self.scaling


class MagnitudeOnlyLinear(DoraBase):
    """The paper's reduced granularity: m ⊙ W0/‖W0‖, only m (out,) trains; no dropout (no adapter input).

    Written to PEFT as zero factors of the spec's rank plus the magnitude."""

    magnitude_only = True

    def __init__(self, base: nn.Module):
        super().__init__(base, 0.0, detach_norm=True, train_magnitude=True)

    @classmethod
    def build(cls, base: nn.Module, spec: LayerSpec) -> "MagnitudeOnlyLinear":
        return cls(base)

    def factors(self) -> None:
        return None

    def peft_factors(self, rank: int, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.magnitude.dtype
        return torch.zeros(rank, self.in_features, dtype=dtype), torch.zeros(self.out_features, rank, dtype=dtype)

    def load_peft_factors(self, a: torch.Tensor, b: torch.Tensor, scaling: float, where: str) -> None:
        if b.any():
            raise InputError(f"{where}: recorded as magnitude-only but its lora_B is not zero")
