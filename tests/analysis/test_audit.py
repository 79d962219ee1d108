"""The base audit: all-zero channels counted block by block equal a whole-tensor count."""

from __future__ import annotations

import json

import pytest
import torch

from ckpt_helpers import write_checkpoint
from dora_diag.analysis.audit import audit_base
from dora_diag.errors import InputError


def _with_zero(shape: tuple[int, ...], rows: list[int] = (), cols: list[int] = (), dtype=torch.float32,
               nan_at: tuple[int, int] | None = None) -> torch.Tensor:
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    w[list(rows)] = 0
    w[:, list(cols)] = 0
    if nan_at:
        w[nan_at] = float("nan")   # a NaN channel is broken, but its norm is not zero
    return w


def _reference(w: torch.Tensor, dim: int) -> int:
    """All-zero slices along ``dim`` of the whole tensor (flattened to 2-D per stored row)."""
    return int((w.double().reshape(w.shape[0], -1) == 0).all(dim=1 - dim).sum())


TENSORS = {
    "layers.0.o_proj.weight": _with_zero((40, 24), rows=[0, 7, 8, 39], cols=[3], nan_at=(12, 5)),
    "layers.0.q_proj.weight": _with_zero((24, 24), cols=[1, 2], dtype=torch.bfloat16),
    "layers.0.conv.weight": _with_zero((6, 3, 2, 2), rows=[5]),
    "layers.0.norm.weight": torch.zeros(24),
}


@pytest.mark.parametrize("block_bytes", [64, 1 << 20])
@pytest.mark.parametrize("axis", ["out", "in"])
def test_counts_equal_a_whole_tensor_count(tmp_path, axis, block_bytes):
    base = write_checkpoint(tmp_path / "base", TENSORS)
    audit = audit_base(base, axis=axis, block_bytes=block_bytes)
    found = {f["tensor"]: f["zero_channels"] for f in audit.findings}
    expected = {n: _reference(w, 0 if axis == "out" else 1) for n, w in TENSORS.items() if w.dim() > 1}
    assert found == {n: k for n, k in expected.items() if k}
    assert audit.tensors_audited == 3 and [s["tensor"] for s in audit.skipped] == ["layers.0.norm.weight"]
    assert found["layers.0.o_proj.weight"] == (4 if axis == "out" else 1)


def test_transposed_layers_count_their_stored_columns(tmp_path):
    """GPT-2's Conv1D stores (in, out): its output channels are stored columns."""
    w = _with_zero((16, 48), cols=[0, 47])
    base = write_checkpoint(tmp_path / "gpt2", {"h.0.attn.c_attn.weight": w}, config={"model_type": "gpt2"})
    (f,) = audit_base(base).findings
    assert f["zero_channels"] == 2 and f["channels"] == 48


def test_experts_are_audited_one_by_one(tmp_path):
    w = torch.randn(3, 8, 4)
    w[1, 2] = 0
    base = write_checkpoint(tmp_path / "moe", {"layers.0.mlp.experts.down_proj": w})
    audit = audit_base(base)
    assert audit.tensors_audited == 3
    assert [(f["tensor"], f["zero_channels"]) for f in audit.findings] == [("layers.0.mlp.experts.down_proj[1]", 1)]


def test_json_is_written_atomically_and_names_the_axis(tmp_path):
    base = write_checkpoint(tmp_path / "base", {"a.weight": _with_zero((4, 4), rows=[2])})
    audit = audit_base(base, axis="out")
    audit.to_json(tmp_path / "audit.json")
    doc = json.loads((tmp_path / "audit.json").read_text())
    assert doc["axis"] == "out" and doc["findings"] == [{"tensor": "a.weight", "shape": [4, 4], "channels": 4,
                                                          "zero_channels": 1}]
    assert doc["bytes_read"] == 64


def test_bad_axis_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="axis"):
        audit_base(tmp_path, axis="rows")


def test_progress_covers_every_byte_read(tmp_path):
    class Recorder:
        def start(self, total_bytes, total_tensors):
            self.total, self.advanced, self.done, self.finished = (total_bytes, total_tensors), 0, [], False

        def advance(self, nbytes):
            self.advanced += nbytes

        def tensor_done(self, name):
            self.done.append(name)

        def finish(self):
            self.finished = True

    base = write_checkpoint(tmp_path / "base", TENSORS)
    rec = Recorder()
    audit = audit_base(base, block_bytes=64, progress=rec)
    assert rec.total == (audit.bytes_read, 3) == (rec.advanced, len(rec.done)) and rec.finished
