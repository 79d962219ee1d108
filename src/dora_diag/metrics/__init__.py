"""Per-tensor kernels for the weight decomposition: magnitude and direction change per channel."""

from .kernels import ChannelSums, block_sums, channel_changes, chord_sums
from .device import resolve_device

__all__ = ["ChannelSums", "block_sums", "channel_changes", "chord_sums", "resolve_device"]
