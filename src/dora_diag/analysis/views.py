"""Views of stored N-D tensors that are not convolution kernels.

A convolution weight ``(out, in, k...)`` is measured per output channel, all later axes
flattened. Other N-D parameters hold one vector per leading index: ViT's
``position_embeddings (1, positions, dim)`` is viewed as ``(positions, dim)``, one channel
per position (``as_vectors``). A stored experts tensor (transformers 5 ``experts.gate_up_proj
(E, 2I, H)``, Llama 4's ``(E, H, 2I)``) is E matrices: each expert is measured as its own 2-D
tensor (``expert_slice``), per output channel. The stored bytes are the same, row-major.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ..architecture import orientation
from ..io.safetensors_file import TensorInfo
from ..io.sources import FineTunedSource


def is_vector_stack(info: TensorInfo) -> bool:
    """``architecture.orientation.is_vector_stack`` of a stored tensor."""
    return orientation.is_vector_stack(info.name, info.shape)


def is_experts_stack(info: TensorInfo) -> bool:
    """``architecture.orientation.is_experts_stack`` of a stored tensor."""
    return orientation.is_experts_stack(info.name, info.shape)


def as_vectors(info: TensorInfo) -> TensorInfo:
    """``info`` seen as 2-D rows along its last axis."""
    return replace(info, shape=(math.prod(info.shape[:-1]), info.shape[-1]))


def expert_slice(info: TensorInfo, expert: int) -> TensorInfo:
    """Expert ``expert``'s matrix ``shape[1:]`` of a stored 3-D experts tensor, named ``name[expert]``."""
    nbytes = info.shape[1] * info.shape[2] * info.itemsize
    return replace(info, name=f"{info.name}[{expert}]", shape=tuple(info.shape[1:]),
                   offset=info.offset + expert * nbytes, nbytes=nbytes)


def expert_target(source: FineTunedSource, info: TensorInfo, expert: int) -> FineTunedSource:
    """A source for expert ``expert`` of the 3-D experts tensor ``info`` of ``source``: a view of
    its stored bytes, or the source's own ``expert_view`` (an adapter on the stacked parameter)."""
    if source.stored:
        return StoredView(source, expert_slice(info, expert))
    return source.expert_view(info.name, expert)


def can_view(source: FineTunedSource, view: str) -> bool:
    """Whether ``source``'s tensors can be read through ``view``: stored ones always, computed
    ones as experts when they offer ``expert_view``."""
    return source.stored or (view == "experts" and hasattr(source, "expert_view"))


class StoredView:
    """One stored fine-tuned tensor read through a view (``as_vectors``, ``expert_slice``):
    a ``FineTunedSource`` for one target; reads go through the wrapped source's reader and are
    counted there."""

    stored = parallel_safe = True

    def __init__(self, source: FineTunedSource, info: TensorInfo):
        self.kind, self.config = source.kind, source.config
        self.info = info
        self._reader = source.reader

    def infos(self) -> dict[str, TensorInfo]:
        return {self.info.name: self.info}

    def rows(self, name: str, base_rows, start: int, stop: int, out=None):
        return self._reader.read_rows(self.info, start, stop, out)

    def channel_sums(self, name: str, base_rows, start: int, stop: int, axis: str) -> None:
        return None

    def rank_and_scale(self, name: str) -> None:
        return None

    def drop_behind(self) -> None:
        """The wrapped source drops behind for both."""

    def bytes_read(self) -> int:
        return 0

    def close(self) -> None:
        """The wrapped source is closed by whoever opened it."""
