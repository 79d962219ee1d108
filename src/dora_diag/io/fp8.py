"""fp8 weights stored with scale tensors: ``W = q * s``, one ``s`` per block of rows and columns.

transformers' fine-grained FP8 (DeepSeek-V3, Qwen3 FP8) stores ``<weight>_scale_inv`` of shape
(ceil(rows / br), ceil(cols / bc)) with ``quantization_config.weight_block_size = [br, bc]``;
despite its name it is the multiplier. fbgemm_fp8 and compressed-tensors store
``<weight>_scale``: one value per tensor, or one per output row. Row blocks are dequantized in
fp32 as they stream, so base and fine-tuned weights are compared in the same units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..arrays import ops_of
from ..errors import InputError
from .safetensors_file import TensorInfo

SCALE_SUFFIXES = ("_scale_inv", "_scale")
# A scale tensor is read whole, once per weight streamed (4 MB in fp32): one value per row of a
# 10^6-row weight, or per 128 x 128 block of any real one. A finer grid is refused.
MAX_SCALE_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class Fp8Scale:
    info: TensorInfo            # the scale tensor
    block: tuple[int, int]      # rows x columns of the weight that share one scale value

    @staticmethod
    def grid(values):
        """Stored scale values, any of the layouts, as the fp32 (row blocks, column blocks) matrix
        (a numpy array or torch tensor, as ``values``)."""
        return ops_of(values).f32(values).reshape(-1, values.shape[-1] if values.ndim == 2 else 1)

    def dequantize(self, q, start: int, values):
        """fp32 rows ``start:start + n`` of ``W`` from its fp8 rows ``q`` (n, cols).

        ``values`` is ``grid`` of the whole scale tensor, of ``q``'s kind and on its device.
        """
        ops = ops_of(q)
        rows, cols = self.block
        s = values[ops.arange(start, start + q.shape[0], q) // rows]   # (n, column blocks)
        if s.shape[1] > 1:
            s = ops.repeat(s, cols, 1)[:, : q.shape[1]]
        return ops.f32(q) * s


def find_scale(name: str, tensors: dict[str, TensorInfo], config: dict) -> Fp8Scale | str | None:
    """The scale of the 2-D fp8 weight ``name``: None when there is none (or the weight is not
    fp8), a reason when the scale's shape is not one of the layouts above."""
    info = tensors[name]
    scale = next((tensors[name + s] for s in SCALE_SUFFIXES if name + s in tensors), None)
    if scale is None or not info.dtype.startswith("F8"):
        return None
    if math.prod(scale.shape) > MAX_SCALE_ELEMENTS:
        raise InputError(f"{scale.path}: fp8 scale {scale.name} {list(scale.shape)} has {math.prod(scale.shape)} "
                         f"values; dora-diag reads scales of at most {MAX_SCALE_ELEMENTS} values whole")
    if len(info.shape) != 2:
        return f"scale {scale.name} of a {len(info.shape)}-D weight"
    rows, cols = info.shape
    if math.prod(scale.shape) == 1:
        return Fp8Scale(scale, (rows, cols))
    if tuple(scale.shape) in ((rows,), (rows, 1)):
        return Fp8Scale(scale, (1, cols))
    block = ((config or {}).get("quantization_config") or {}).get("weight_block_size")
    if (isinstance(block, list) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block)
            and tuple(scale.shape) == (-(-rows // block[0]), -(-cols // block[1]))):
        return Fp8Scale(scale, (block[0], block[1]))
    return (f"scale {scale.name} of shape {list(scale.shape)} fits neither one value per tensor or row nor "
            f"weight_block_size {block}")


def scale_names(tensors: dict[str, TensorInfo]) -> set[str]:
    """Names of the scale tensors that belong to fp8 weights (not weights themselves)."""
    return {name + s for name, info in tensors.items() if info.dtype.startswith("F8")
            for s in SCALE_SUFFIXES if name + s in tensors}
