"""The kernel as the streamer combines it (importable as ``kernel_helpers``).

``ARRAYS`` says which arrays it runs on: torch tensors, or numpy arrays (what the CPU engine
streams: bf16 as its uint16 bits, ``dora_diag.arrays``), converted from and back to torch so
that the same assertions check both.
"""

from __future__ import annotations

import torch

from dora_diag.arrays import ieee, ops_of, torch_ops
from dora_diag.metrics.kernels import (ChannelChanges, ChannelSums, apply_chord, block_sums, channel_changes, chord_sums,
                                       square_sums, unsure_c2)

ARRAYS = "torch"   # or "numpy"; switched by tests/metrics/conftest.py


def kernel(a: torch.Tensor, c: torch.Tensor, axis: str = "out", blocks: int = 1) -> ChannelChanges:
    """Run the kernel over ``blocks`` row blocks, with the refine pass like the streamer."""
    if ARRAYS == "numpy":
        with ieee():   # as the streamer runs it: NaN/Inf propagate without warnings
            ch = _kernel(*(torch_ops().numpy(x.contiguous()) for x in (a, c)), axis, blocks, "cpu")
        return ChannelChanges(*(torch.from_numpy(getattr(ch, f)) for f in ChannelChanges.FIELDS))
    return _kernel(a, c, axis, blocks, torch.device("cpu"))


def _kernel(a, c, axis: str, blocks: int, device) -> ChannelChanges:
    dim_channels = a.shape[0] if axis == "out" else a.shape[1]
    acc = ChannelSums.zeros(dim_channels, device)
    bounds = torch.linspace(0, a.shape[0], blocks + 1).long().tolist()
    for s, e in zip(bounds, bounds[1:]):
        acc.add_(block_sums(a[s:e], c[s:e], axis), slice(s, e) if axis == "out" else None)
    if unsure_c2(acc).any():
        acc.c2 = square_sums(c, axis)
    ch = channel_changes(acc)
    if ch.refine.any():
        sqrt = ops_of(acc.a2).sqrt
        chord = chord_sums(a, c, sqrt(acc.a2), sqrt(acc.c2), axis)
        apply_chord(ch, chord)
    return ch
