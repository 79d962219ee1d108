"""The frozen dense layers an adapter can wrap: ``nn.Linear`` and GPT-2 style ``Conv1D``.

Everything downstream sees the base weight as W0 of shape (out, in), the nn.Linear layout.
A ``transformers.pytorch_utils.Conv1D`` stores (in, out); it is read through a transposed view
(no copy). Conv1D is recognised by class name and attributes, so transformers is never imported.
"""

from __future__ import annotations

import torch
from torch import nn


def is_conv1d(module: nn.Module) -> bool:
    """True for GPT-2's ``Conv1D`` (weight (in=nx, out=nf), forward x @ W + b)."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.ndim == 2
            and hasattr(module, "nf") and tuple(weight.shape) == (module.nx, module.nf))


def is_dense(module: nn.Module) -> bool:
    """True if ``module`` is a layer an adapter can wrap."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def weight_out_in(module: nn.Module) -> torch.Tensor:
    """W0 as an (out, in) tensor: the weight itself (Linear) or a transposed view (Conv1D)."""
    return module.weight.t() if is_conv1d(module) else module.weight


def features(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a dense module."""
    out_features, in_features = weight_out_in(module).shape
    return in_features, out_features


def set_weight_out_in(module: nn.Module, weight: torch.Tensor) -> None:
    """Overwrite the module's weight in place from an (out, in) tensor, in the module's own layout and dtype."""
    target = module.weight
    source = weight.t() if is_conv1d(module) else weight
    with torch.no_grad():
        target.copy_(source.to(target.dtype))
