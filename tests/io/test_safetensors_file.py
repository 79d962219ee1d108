"""Our header parser and row reader against the reference safetensors implementation."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dora_diag.arrays import NUMPY, torch_ops
from dora_diag.errors import InputError
from dora_diag.io.safetensors_file import RowReader, read_header


@pytest.fixture
def st_file(tmp_path):
    tensors = {
        "a": torch.randn(7, 5),
        "b": torch.randn(3, 4, 2).to(torch.bfloat16),
        "c": torch.arange(6, dtype=torch.int32),
        "h": torch.randn(4, 3).half(),
        "f8": torch.randn(4, 4).to(torch.float8_e4m3fn),
    }
    path = tmp_path / "x.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path, tensors


def test_header_and_rows_match_safetensors(st_file):
    path, tensors = st_file
    infos, meta = read_header(str(path))
    assert meta == {"format": "pt"}
    assert set(infos) == set(tensors)
    with RowReader() as reader, safe_open(str(path), framework="pt") as ref:
        for name, t in tensors.items():
            assert infos[name].shape == tuple(t.shape)
            full = reader.read_all(infos[name])
            assert torch.equal(full.view(torch.uint8), ref.get_tensor(name).view(torch.uint8))
        rows = reader.read_rows(infos["b"], 1, 3)
        assert torch.equal(rows, tensors["b"][1:3])
        assert reader.bytes_read > 0


def test_numpy_reads_give_the_same_values(st_file):
    """Into numpy buffers (the CPU engine's) every dtype reads as the same values: bf16 as its
    bits, fp8 decoded to fp32, the rest as themselves."""
    path, tensors = st_file
    infos, _ = read_header(str(path))
    with RowReader() as reader:
        for name, t in tensors.items():
            info = infos[name]
            got = reader.read_all(info, NUMPY)
            rows = reader.read_rows(info, 0, info.shape[0], out=NUMPY.empty_bytes(info.nbytes)) if info.shape else got
            ref = t.float().numpy() if t.dtype.is_floating_point and t.dtype != torch.float64 else t.numpy()
            for x in (got, rows):
                assert x.shape == tuple(t.shape)
                np.testing.assert_array_equal(NUMPY.values(x), ref if x.dtype != np.float16 else t.numpy())
            if t.dtype == torch.bfloat16:
                np.testing.assert_array_equal(got, torch_ops().numpy(t))


def _rewrite_header(path, mutate):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    mutate(header)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


@pytest.mark.parametrize("mutate,message", [
    (lambda h: h["a"].update(dtype="Q7"), "unknown dtype"),
    (lambda h: h["a"].update(shape=[7, 6]), "do not match shape"),
    (lambda h: h["a"].update(data_offsets=[0, 10**12]), "do not match"),
    (lambda h: h["a"].update(shape="x"), "invalid shape"),
])
def test_corrupt_headers_are_input_errors(st_file, mutate, message):
    path, _ = st_file
    _rewrite_header(path, mutate)
    with pytest.raises(InputError, match=message):
        read_header(str(path))


def test_truncated_file(st_file):
    path, _ = st_file
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(InputError, match="truncated"):
        read_header(str(path))
    path.write_bytes(raw[:5])
    with pytest.raises(InputError, match="shorter than"):
        read_header(str(path))


def test_oversized_or_garbage_header(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(InputError, match="exceeds"):
        read_header(str(p))
    p.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{]")
    with pytest.raises(InputError, match="not valid JSON"):
        read_header(str(p))
    p.write_bytes(struct.pack("<Q", 2) + b"[]")
    with pytest.raises(InputError, match="not a JSON object"):
        read_header(str(p))


def test_file_shrinking_after_header_read_is_an_input_error(st_file):
    path, _ = st_file
    infos, _ = read_header(str(path))
    path.write_bytes(path.read_bytes()[: infos["a"].offset + 4])
    with RowReader() as reader, pytest.raises(InputError, match="unexpected end of file"):
        reader.read_all(infos["a"])


def test_read_ahead_windows_and_caller_buffers(tmp_path, monkeypatch):
    """Sequential row reads into one reused buffer give the same rows; the kernel is asked for
    the range ahead in contiguous pieces, not at every read, and anew after a jump back."""
    w = torch.arange(64 * 1024, dtype=torch.float32).reshape(64, 1024)   # 4 KiB rows
    save_file({"w": w}, str(tmp_path / "w.safetensors"))
    info = read_header(str(tmp_path / "w.safetensors"))[0]["w"]
    calls = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, advice: calls.append((off - info.offset, n)))
    buf = torch.empty(4 * 4096, dtype=torch.uint8)
    with RowReader(readahead=32 * 1024) as reader:
        for start in range(0, 64, 4):
            assert torch.equal(reader.read_rows(info, start, start + 4, out=buf), w[start:start + 4])
        reader.read_rows(info, 0, 4, out=buf)
    *stream, jump = calls
    assert stream[0] == (16 * 1024, 32 * 1024)                    # right after the first read
    assert all(off == prev_off + prev_n for (prev_off, prev_n), (off, _) in zip(stream, stream[1:]))
    assert len(stream) <= 16 // 2 + 1                               # 16 reads of half a window
    assert jump == (16 * 1024, 32 * 1024)


def _sparse(path, entries: dict, data_bytes: int, metadata=None):
    header = dict(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + data_bytes)
    return str(path)


def _entry(dtype, shape, begin, item=4):
    n = item
    for s in shape:
        n *= s
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, begin + n]}


@pytest.mark.parametrize("shape,ok", [([1 << 21, 1], True), ([(1 << 21) + 1, 1], False), ([1, 1 << 20], True),
                                      ([1, (1 << 20) + 1], False), ([2, 1024, 1025], False), ([1 << 24], True)])
def test_measurable_shape_limits(tmp_path, shape, ok):
    """Limits apply to float tensors of two or more dimensions (those that are streamed)."""
    path = _sparse(tmp_path / "x.safetensors", {"w": _entry("F32", shape, 0)}, 4 * torch.Size(shape).numel())
    if ok:
        assert read_header(path)[0]["w"].shape == tuple(shape)
    else:
        with pytest.raises(InputError, match="dora-diag (streams rows of at most|measures at most)"):
            read_header(path)
    int_path = _sparse(tmp_path / "i.safetensors", {"w": _entry("I32", shape, 0)}, 4 * torch.Size(shape).numel())
    assert read_header(int_path)[0]["w"].shape == tuple(shape)   # never streamed: no limit


@pytest.mark.parametrize("metadata", [{"a": 1}, {"a": None}, {"a": ["x"]}, ["x"]])
def test_metadata_must_map_strings_to_strings(tmp_path, metadata):
    path = _sparse(tmp_path / "x.safetensors", {"w": _entry("F32", [1], 0)}, 4, metadata)
    with pytest.raises(InputError, match="__metadata__ is not an object of strings"):
        read_header(path)


@pytest.mark.parametrize("bad", [[True, 2], [2, 2.0], [-1, 2]])
def test_shapes_are_non_negative_integers_not_booleans(tmp_path, bad):
    path = _sparse(tmp_path / "x.safetensors", {"w": {"dtype": "F32", "shape": bad, "data_offsets": [0, 16]}}, 16)
    with pytest.raises(InputError, match="invalid shape"):
        read_header(path)


def test_zero_sized_tensors_may_share_an_offset(tmp_path):
    entries = {"e1": _entry("F32", [0, 4], 0), "e2": _entry("F32", [0], 0), "w": _entry("F32", [2], 0)}
    assert set(read_header(_sparse(tmp_path / "x.safetensors", entries, 8))[0]) == {"e1", "e2", "w"}
