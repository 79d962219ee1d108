"""``--axis``, ``--device``, ``--split-fused``, ``--allow-partial``, ``--block-mb``: the streaming
options of compare and check, declared once, with their defaults from ``options``."""

from __future__ import annotations

import click

from ..options import AXES, DEFAULT_BLOCK_BYTES, DEVICES
from .numbers import MAX_BLOCK_MB, FiniteRange

OPTIONS = (
    click.option("--axis", type=click.Choice(AXES), default="out", show_default=True,
                 help="Channels: 'out' = output rows (DoRA/PEFT), 'in' = input columns (LyCORIS)."),
    click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
    click.option("--split-fused", is_flag=True, help="Also report fused q/k/v projections per group."),
    click.option("--allow-partial", is_flag=True,
                 help="Compare an adapter's tensors found in BASE even when some are not."),
    click.option("--block-mb", type=FiniteRange(min=0, max=MAX_BLOCK_MB, min_open=True),
                 default=DEFAULT_BLOCK_BYTES / 2**20, show_default=True,
                 help="Rows are streamed in blocks of about this many MiB (memory bound)."),
)


def stream_options(fn):
    """The command gets ``axis``, ``device``, ``split_fused``, ``allow_partial`` and ``block_mb``."""
    for option in reversed(OPTIONS):
        fn = option(fn)
    return fn


def stream_kwargs(axis: str, device: str, split_fused: bool, allow_partial: bool, block_mb: float) -> dict:
    """The library's keyword arguments (``compare``/``check``) for the options."""
    return {"axis": axis, "device": device, "split_fused": split_fused, "allow_partial": allow_partial,
            "block_bytes": max(1, int(block_mb * 2**20))}
