"""The frozen dense layers an adapter can wrap: ``nn.Linear`` and GPT-2 style ``Conv1D``.

Everything downstream sees the base weight as W0 of shape (out, in), the nn.Linear layout.
A ``transformers.pytorch_utils.Conv1D`` stores (in, out); it is read through a transposed view
(no copy). Which modules are Conv1D is architecture knowledge (``architecture.conv1d``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..architecture.conv1d import is_conv1d_module as is_conv1d


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


def with_weight_out_in(module: nn.Module, weight: torch.Tensor) -> nn.Module:
    """The module carrying ``weight`` (out, in) in its own layout and dtype: updated in place when its
    weight is a parameter; a base whose weight is computed on access (e.g. NF4-quantized) becomes a
    plain nn.Linear with that weight and the same bias."""
    if isinstance(module.weight, nn.Parameter):
        source = weight.t() if is_conv1d(module) else weight
        with torch.no_grad():
            module.weight.copy_(source.to(module.weight.dtype))
        return module
    dtype = module.weight.dtype
    dense = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None,
                      device=weight.device, dtype=dtype).requires_grad_(False)
    with torch.no_grad():
        dense.weight.copy_(weight.to(dtype))
        if module.bias is not None:
            dense.bias.copy_(module.bias)
    return dense
