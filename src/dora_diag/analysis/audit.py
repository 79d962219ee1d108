"""``audit_base()``: a pre-flight check of a base model before a DoRA run.

DoRA divides each weight channel by its norm ``‖W0‖`` (over the input axis per output channel
with ``axis="out"``, PEFT's convention; over the output axis per input column with ``"in"``,
LyCORIS' ``wd_on_output=False``). A channel that is all zeros has norm 0, and a naive
implementation divides by zero (PEFT gives NaN on Llama-3.1-8B's ``o_proj``: 511 zero rows).
The base is streamed once in row blocks of about ``block_bytes``; no whole tensor is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..arrays import NUMPY
from ..architecture.orientation import stored_transposed
from ..architecture.registry import infer_model_type
from ..errors import InputError
from ..io.checkpoint import Checkpoint, open_checkpoint
from ..io.fp8 import scale_names
from ..io.safetensors_file import STREAM_READAHEAD, RowReader, TensorInfo
from ..options import AXES, DEFAULT_BLOCK_BYTES
from .compare import Progress
from .plan import skip_reason
from .stream import block_rows
from .views import as_vectors, expert_slice, is_experts_stack, is_vector_stack


@dataclass
class Audit:
    """``findings``: one dict per weight matrix with all-zero channels, {"tensor", "shape",
    "channels", "zero_channels"}; ``skipped``: tensors without channels, {"tensor", "reason"}."""

    base: str
    axis: str
    tensors_audited: int = 0
    bytes_read: int = 0
    findings: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        from .. import __version__

        return {"tool": "dora-diag", "version": __version__, "audit": "zero channels", "base": self.base,
                "axis": self.axis, "tensors_audited": self.tensors_audited, "bytes_read": self.bytes_read,
                "findings": self.findings, "skipped": self.skipped}

    def lines(self) -> list[str]:
        """One line per matrix with zero channels, then the summary."""
        what = "output channels (rows)" if self.axis == "out" else "input columns"
        out = [f"{f['tensor']}: {f['zero_channels']} of {f['channels']} {what} all zero" for f in self.findings]
        out.append(f"{self.base}: {len(self.findings)} of {self.tensors_audited} weight matrices have all-zero {what}"
                   + (": a naive DoRA norm divides by zero there (PEFT gives NaN)" if self.findings else ""))
        return out

    def to_json(self, path: str | os.PathLike) -> None:
        from ..outputs.atomic import write_atomic
        from ..outputs.tabular import dump_json

        write_atomic(path, dump_json(self.to_dict()))


def audit_base(base: str | os.PathLike, axis: str = "out", block_bytes: int = DEFAULT_BLOCK_BYTES,
               progress: Progress | None = None) -> Audit:
    """The weight matrices of ``base`` with all-zero channels along ``axis`` ("out": output
    channels, "in": input columns), in file order; ``progress`` as in ``compare``."""
    if axis not in AXES:
        raise InputError(f"axis must be 'out' or 'in', not {axis!r}")
    progress = progress or Progress()
    audit = Audit(os.fspath(base), axis)
    matrices = _plan(open_checkpoint(base), axis, audit.skipped)
    audit.tensors_audited = len(matrices)
    progress.start(sum(m.nbytes for m, _ in matrices), len(matrices))
    try:
        with RowReader(readahead=STREAM_READAHEAD) as reader:
            for matrix, on_rows in matrices:
                zero = _zero_channels(reader, matrix, on_rows, block_bytes)
                if zero:
                    audit.findings.append({"tensor": matrix.name, "shape": list(matrix.shape),
                                           "channels": matrix.shape[0] if on_rows else matrix.shape[1],
                                           "zero_channels": zero})
                progress.advance(matrix.nbytes)
                progress.tensor_done(matrix.name)
            audit.bytes_read = reader.bytes_read
    finally:
        progress.finish()
    return audit


def _plan(ckpt: Checkpoint, axis: str, skipped: list[dict]) -> list[tuple[TensorInfo, bool]]:
    """Every matrix to audit, in file order; tensors without channels go to ``skipped``."""
    model_type = infer_model_type(ckpt.config, sorted(ckpt.tensors))
    scales = scale_names(ckpt.tensors)
    matrices = []
    for info in sorted(ckpt.tensors.values(), key=lambda t: (t.path, t.offset)):
        reason = "fp8 scale" if info.name in scales else skip_reason(info)
        if reason:
            skipped.append({"tensor": info.name, "reason": reason})
        else:
            matrices.extend(_matrices(info, model_type, axis))
    return matrices


def _matrices(info: TensorInfo, model_type: str | None, axis: str) -> list[tuple[TensorInfo, bool]]:
    """The 2-D matrices (stored rows, flattened rest) of one stored tensor, each with whether
    the channels of ``axis`` are its stored rows (else its columns), as ``plan`` orients them."""
    flip = stored_transposed(model_type, info.name, info.shape)
    if is_experts_stack(info):
        return [(expert_slice(info, e), (axis == "out") != flip) for e in range(info.shape[0])]
    if is_vector_stack(info):
        return [(as_vectors(info), axis == "out")]
    return [(info, (axis == "out") != flip)]


def _zero_channels(reader: RowReader, info: TensorInfo, on_rows: bool, block_bytes: int) -> int:
    """Rows (``on_rows``) or columns of ``info`` that are all zero, one block in memory at a time."""
    rows = info.shape[0]
    step = block_rows(info.row_bytes, block_bytes)
    buf = NUMPY.empty_bytes(step * info.row_bytes)
    zero_rows, live_cols = 0, np.zeros(info.row_elements, dtype=bool)
    for lo in range(0, rows, step):
        # != 0 is True for NaN: a NaN channel is broken, but not a zero norm. (As values: numpy
        # holds bf16 as its bits, and -0.0 is zero.)
        block = NUMPY.values(reader.read_rows(info, lo, min(rows, lo + step), out=buf))
        nonzero = block.reshape(-1, info.row_elements) != 0
        if on_rows:
            zero_rows += int((~nonzero.any(axis=1)).sum())
        else:
            live_cols |= nonzero.any(axis=0)
    return zero_rows if on_rows else int((~live_cols).sum())
