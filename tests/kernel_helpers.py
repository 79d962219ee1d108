"""The kernel as the streamer combines it (importable as ``kernel_helpers``)."""

from __future__ import annotations

import torch

from dora_diag.metrics.kernels import (ChannelChanges, ChannelSums, apply_chord, block_sums, channel_changes, chord_sums,
                                       square_sums, unsure_c2)


def kernel(a: torch.Tensor, c: torch.Tensor, axis: str = "out", blocks: int = 1) -> ChannelChanges:
    """Run the kernel over ``blocks`` row blocks, with the refine pass like the streamer."""
    dim_channels = a.shape[0] if axis == "out" else a.shape[1]
    acc = ChannelSums.zeros(dim_channels, torch.device("cpu"))
    bounds = torch.linspace(0, a.shape[0], blocks + 1).long().tolist()
    for s, e in zip(bounds, bounds[1:]):
        acc.add_(block_sums(a[s:e], c[s:e], axis), slice(s, e) if axis == "out" else None)
    if unsure_c2(acc).any():
        acc.c2 = square_sums(c, axis)
    ch = channel_changes(acc)
    if ch.refine.any():
        chord = chord_sums(a, c, acc.a2.sqrt(), acc.c2.sqrt(), axis)
        apply_chord(ch, chord)
    return ch
