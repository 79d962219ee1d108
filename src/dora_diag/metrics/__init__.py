"""Per-tensor kernels for the weight decomposition: magnitude and direction change per channel."""

from .kernels import ChannelSums, block_sums, channel_changes, chord_sums

__all__ = ["ChannelSums", "block_sums", "channel_changes", "chord_sums"]
