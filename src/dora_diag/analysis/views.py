"""Tensors measured as rows of their last axis: N-D tensors that are not convolution kernels.

A convolution weight ``(out, in, k...)`` is measured per output channel, all later axes
flattened. Other N-D parameters hold one vector per leading index: ViT's
``position_embeddings (1, positions, dim)`` has one channel per position, a transformers 5
experts tensor ``gate_up_proj (E, 2I, H)`` one per (expert, output row). They are viewed as
``(prod(shape[:-1]), shape[-1])``; the stored bytes are the same, row-major.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..io.safetensors_file import TensorInfo
from ..io.sources import FineTunedSource


def is_vector_stack(info: TensorInfo) -> bool:
    """N-D (3+) and not a module's ``weight``: nn.Conv* kernels are the N-D ``.weight`` tensors."""
    return len(info.shape) > 2 and not info.name.endswith(".weight")


def as_vectors(info: TensorInfo) -> TensorInfo:
    """``info`` seen as 2-D rows along its last axis."""
    return replace(info, shape=(math.prod(info.shape[:-1]), info.shape[-1]))


class VectorView:
    """One stored fine-tuned tensor read through its 2-D vector view (a ``FineTunedSource``
    for one target; reads go through the wrapped source's reader, counted there)."""

    def __init__(self, source: FineTunedSource, info: TensorInfo):
        self.kind, self.config = source.kind, source.config
        self.info = as_vectors(info)
        self._reader = source.reader

    @staticmethod
    def can_view(source: FineTunedSource) -> bool:
        return hasattr(source, "reader")

    def infos(self) -> dict[str, TensorInfo]:
        return {self.info.name: self.info}

    def rows(self, name: str, base_rows: torch.Tensor, start: int, stop: int,
             out: torch.Tensor | None = None) -> torch.Tensor:
        return self._reader.read_rows(self.info, start, stop, out)

    def bytes_read(self) -> int:
        return 0

    def close(self) -> None:
        """The wrapped source is closed by whoever opened it."""
