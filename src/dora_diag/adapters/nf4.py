"""4-bit NormalFloat (NF4) storage for frozen dense layers (QLoRA / QDoRA), in plain torch.

A weight (out, in) is cut into blocks of ``block_size`` consecutive values (row-major); each
block keeps its absmax (float32) and 4-bit indices into the NF4 code book (QLoRA, Dettmers et
al. 2023), two indices per uint8. The layer dequantizes its weight on every forward, so the
full-precision copy only exists transiently. No double quantization of the absmax values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .inject import matches

NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0])
DEFAULT_BLOCK = 64
QUANTIZE_SKIP = ("lm_head", "score", "classifier")


def quantize_nf4(weight: torch.Tensor, block_size: int = DEFAULT_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (any shape, numel n) -> packed (ceil(n / block) * block / 2,) uint8, absmax (ceil(n / block),) float32."""
    if block_size <= 0 or block_size % 2:
        raise InputError(f"NF4 block size must be a positive even number, got {block_size}")
    flat = weight.detach().reshape(-1).float()
    pad = (-flat.numel()) % block_size
    blocks = F.pad(flat, (0, pad)).view(-1, block_size)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks / absmax.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
    code = NF4_CODE.to(flat.device)
    idx = torch.bucketize(scaled, (code[1:] + code[:-1]) / 2).to(torch.uint8).view(-1)
    return (idx[0::2] << 4) | idx[1::2], absmax


def dequantize_nf4(packed: torch.Tensor, absmax: torch.Tensor, shape: torch.Size | tuple[int, ...],
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of ``quantize_nf4``: a tensor of ``shape`` and ``dtype``."""
    idx = torch.stack([packed >> 4, packed & 0xF], dim=1).view(-1).long()
    values = NF4_CODE.to(absmax.device)[idx].view(absmax.numel(), -1) * absmax[:, None]
    n = torch.Size(shape).numel()
    return values.view(-1)[:n].view(shape).to(dtype)


class NF4Linear(nn.Linear):
    """A frozen nn.Linear whose weight (out, in) is held in NF4 and dequantized on access.

    Subclasses nn.Linear so adapters wrap it like any dense layer; ``weight`` is a read-only
    property, the state holds ``packed``/``absmax`` buffers (and the bias, kept as is).
    """

    def __init__(self, linear: nn.Linear, block_size: int = DEFAULT_BLOCK):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.block_size, self.compute_dtype = block_size, linear.weight.dtype
        packed, absmax = quantize_nf4(linear.weight, block_size)
        self.register_buffer("packed", packed)
        self.register_buffer("absmax", absmax)
        if linear.bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    @property
    def weight(self) -> torch.Tensor:
        return dequantize_nf4(self.packed, self.absmax, (self.out_features, self.in_features), self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nf4 block={self.block_size}"


def quantize_linears(model: nn.Module, skip: tuple[str, ...] = QUANTIZE_SKIP,
                     block_size: int = DEFAULT_BLOCK) -> list[str]:
    """Replace every plain nn.Linear (except names matching ``skip``) by an NF4Linear, in place."""
    names = [n for n, m in model.named_modules()
             if type(m) is nn.Linear and not matches(n, skip)]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, NF4Linear(getattr(owner, child), block_size))
    if not names:
        raise InputError("quantize='nf4': the model has no nn.Linear layers to quantize")
    return names


def model_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (shared storage counted once)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total
