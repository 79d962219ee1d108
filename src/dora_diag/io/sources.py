"""Fine-tuned sources: anything that can produce the fine-tuned rows for a base tensor.

A full checkpoint reads them from disk; a PEFT adapter computes them from the base rows and
its low-rank factors. The analyzer only sees this interface, so every fine-tuned input kind
streams through the same kernels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

from ..errors import InputError
from .adapter_formats import DIFFUSERS_LORA_WEIGHTS, is_diffusers_lora, is_lycoris_file
from .checkpoint import ADAPTER_CONFIG, ADAPTER_WEIGHTS, Checkpoint, open_checkpoint
from .safetensors_file import STREAM_READAHEAD, RowReader, TensorInfo, read_header


class FineTunedSource(Protocol):
    kind: str          # what it is, for people ("full", "lora", "dora"); the engine never branches on it
    method: str        # the fine-tuning method that wrote it, one of io.method.METHODS
    config: dict       # config.json of the checkpoint, {} if none
    # Capabilities the engine plans by:
    stored: bool         # rows are read as stored on disk (streamed beside the base block, counted
                         # as bytes, dropped from the page cache on huge runs); else computed from the base
    parallel_safe: bool  # several of its tensors may stream at once from different threads
    # Parts of the input this source cannot apply, each {"tensor", "reason"} (base name where
    # known): adapter modules of an unsupported algorithm, names that fit no base tensor.
    skipped: Sequence[dict]
    # The axes ("out", "in") its DoRA magnitudes run over where the format lets them differ per
    # file or module (LyCORIS' wd_on_output); () where there are none or the format fixes it.
    magnitude_axes: Sequence[str] = ()

    def infos(self) -> dict[str, TensorInfo]:
        """Tensors this source can produce, by its own names (shapes as stored)."""

    def rows(self, name: str, base_rows, start: int, stop: int, out=None):
        """Fine-tuned rows ``start:stop`` of tensor ``name``, shaped like ``base_rows``.

        Rows read from disk go into ``out`` (a uint8 buffer, numpy or torch: the rows are of its
        kind, ``arrays``) when given; computed rows ignore it. Sources that compute rows
        (``stored`` False) get and return torch tensors.
        """

    def rank_and_scale(self, name: str) -> tuple[int, float] | None:
        """(r, s) of the low-rank module that produces tensor ``name``; None for tensors read whole."""

    def channel_sums(self, name: str, base_rows, start: int, stop: int, axis: str):
        """Per-channel sums of rows ``start:stop`` straight from low-rank factors (no dense rows),
        or None where the source has no such shortcut (``metrics.kernels.ChannelSums``)."""

    def drop_behind(self) -> None:
        """Stop keeping what it read in the page cache (a run larger than memory)."""

    def bytes_read(self) -> int: ...

    def close(self) -> None: ...


class FullSource:
    """A full fine-tuned checkpoint: rows come straight from its safetensors files."""

    kind = "full"
    method = "ft"
    stored = parallel_safe = True
    skipped: Sequence[dict] = ()
    magnitude_axes: Sequence[str] = ()

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self.config = checkpoint.config
        self.reader = RowReader(STREAM_READAHEAD)

    def infos(self) -> dict[str, TensorInfo]:
        return self.checkpoint.tensors

    def rows(self, name: str, base_rows, start: int, stop: int, out=None):
        return self.reader.read_rows(self.checkpoint.tensors[name], start, stop, out)

    def rank_and_scale(self, name: str) -> None:
        return None

    def channel_sums(self, name: str, base_rows, start: int, stop: int, axis: str) -> None:
        return None

    def drop_behind(self) -> None:
        self.reader.drop_behind = True

    def bytes_read(self) -> int:
        return self.reader.bytes_read

    def close(self) -> None:
        self.reader.close()


def is_adapter(path: str) -> bool:
    p = Path(path)
    return (p / ADAPTER_CONFIG).is_file() if p.is_dir() else p.name == ADAPTER_WEIGHTS


def is_any_adapter(path: str) -> bool:
    """A PEFT, LyCORIS/kohya or diffusers adapter (anything ``open_source`` computes from factors)."""
    if is_adapter(path):
        return True
    weights = _single_adapter_file(path)
    if weights is None:
        return False
    tensors = read_header(weights)[0]
    return is_lycoris_file(tensors) or is_diffusers_lora(tensors)


def open_base(path: str) -> Checkpoint:
    """The base model at ``path``; an adapter given there is an InputError saying what BASE is."""
    if is_any_adapter(str(path)):
        raise InputError(f"{path}: this is an adapter, not a model; BASE must be the full model the adapter "
                         "was trained on (give the adapter as a fine-tuned run after it)")
    return open_checkpoint(path)


def open_source(path: str, base: Checkpoint) -> FineTunedSource:
    """Open a fine-tuned checkpoint, PEFT adapter, LyCORIS/kohya or diffusers LoRA at ``path``
    against ``base``. Adapters compute with torch: their modules (and torch) are imported here,
    only when one is opened."""
    if is_adapter(path):
        from .peft import open_adapter

        return open_adapter(path, base)
    weights = _single_adapter_file(path)
    if weights is not None:
        tensors = read_header(weights)[0]
        if is_lycoris_file(tensors):
            from .lycoris import open_lycoris

            return open_lycoris(weights, base)
        if is_diffusers_lora(tensors):
            from .diffusers import open_diffusers_lora

            return open_diffusers_lora(weights, base)
    return FullSource(open_checkpoint(path))


def _single_adapter_file(path: str) -> str | None:
    """The file that may hold a LyCORIS/kohya or diffusers LoRA: ``path`` itself, or a
    directory's ``pytorch_lora_weights.safetensors`` (diffusers' ``save_lora_weights``)."""
    p = Path(path)
    if p.is_dir():
        p = p / DIFFUSERS_LORA_WEIGHTS
    return str(p) if p.is_file() and p.suffix == ".safetensors" else None
