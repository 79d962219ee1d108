"""DVoRA: DoRA whose direction update is VeRA's (Kopiczko et al. 2024): frozen random projections
shared by all of a model's adapted layers, and trained scaling vectors per layer.

Shapes: shared A (r, max_in), B (max_out, r), sliced per layer to (r, in), (out, r); λ_d (r,),
λ_b (out,); the magnitude m (out,) and the row norms over dim=1 as in ``layers.DoraBase``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError
from .layers import DoraBase, LayerSpec, adapter_dtype


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
    ``d_initial`` and λ_b (out,) at 0 (VeRA's init), so step 0 reproduces W0. Written to PEFT as
    lora_A = diag(λ_d)·A, lora_B = diag(λ_b)·B / scaling, and read back by recovering λ_d, λ_b.
    """

    per_module_rank = False   # the shared projections fix one rank for the whole model

    def __init__(self, base: nn.Module, vera_A: torch.Tensor, vera_B: torch.Tensor, dropout: float = 0.0,
                 detach_norm: bool = True, d_initial: float = 0.1):
        super().__init__(base, dropout, detach_norm, train_magnitude=True)
        dtype, device = adapter_dtype(base), base.weight.device
        self.rank = vera_A.shape[0]
        self.register_buffer("vera_A", vera_A[:, :self.in_features].to(device, dtype), persistent=False)
        self.register_buffer("vera_B", vera_B[:self.out_features].to(device, dtype), persistent=False)
        self.lambda_d = nn.Parameter(torch.full((self.rank,), d_initial, dtype=dtype, device=device))
        self.lambda_b = nn.Parameter(torch.zeros(self.out_features, dtype=dtype, device=device))

    @classmethod
    def build(cls, base: nn.Module, spec: LayerSpec) -> "DVoraLinear":
        return cls(base, *spec.shared, dropout=spec.dropout, detach_norm=spec.detach_norm)

    @classmethod
    def shared_state(cls, shapes: list[tuple[int, int]], rank: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The projections every layer slices: A (r, max in), B (max out, r)."""
        return vera_projections(rank, max(s[0] for s in shapes), max(s[1] for s in shapes), generator)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(diag(λ_d)·A (r, in), diag(λ_b)·B (out, r), 1.0)."""
        return self.lambda_d.unsqueeze(1) * self.vera_A, self.lambda_b.unsqueeze(1) * self.vera_B, 1.0

    def load_peft_factors(self, a: torch.Tensor, b: torch.Tensor, scaling: float, where: str) -> None:
        """Recover λ_d, λ_b from diag(λ_d)·A_shared and diag(λ_b)·B_shared (least squares per row, then verified)."""
        a_eff, b_eff = a.to(torch.float64), b.to(torch.float64) * scaling
        a_s, b_s = self.vera_A.to(torch.float64), self.vera_B.to(torch.float64)
        if a_eff.shape != a_s.shape or b_eff.shape != b_s.shape:
            raise InputError(f"{where}: DVoRA factors have shapes {tuple(a_eff.shape)}, {tuple(b_eff.shape)}; "
                             f"the model needs {tuple(a_s.shape)}, {tuple(b_s.shape)}")
        d = (a_eff * a_s).sum(1) / a_s.pow(2).sum(1)
        lam_b = (b_eff * b_s).sum(1) / b_s.pow(2).sum(1)
        residual = max((a_eff - d[:, None] * a_s).abs().max().item(), (b_eff - lam_b[:, None] * b_s).abs().max().item())
        if residual > 1e-4 * (1 + max(a_eff.abs().max().item(), b_eff.abs().max().item())):
            raise InputError(f"{where}: lora_A/lora_B are not a DVoRA factorisation of this seed's shared matrices")
        self.lambda_d.copy_(d)
        self.lambda_b.copy_(lam_b)
