"""A minimal, validating reader for the safetensors format.

We parse the header ourselves instead of going through ``safe_open`` so that every way a
file can be broken (truncated shard, corrupt or oversized header, offsets past the end)
becomes an ``InputError`` naming the file, and so that rows can be read straight into a
reusable buffer with ``preadv`` — the bounded-memory streaming the analyzer is built on.

Layout: 8-byte little-endian header length N, N bytes of JSON, then the data section.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import threading
from dataclasses import dataclass

from ..arrays import ops_of, torch_ops
from ..errors import InputError
from .fd_pool import POOL
from .json_limits import parse_json

# safetensors dtype code -> item size in bytes (the array types: ``arrays.NumpyOps``/``TorchOps``)
ITEM_SIZES: dict[str, int] = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
                              "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
# Bounds on what a header may declare, so that memory stays bounded whatever a file says
# (docs/supported.md). A parsed entry costs ~1 KB of Python objects: the tensor count bounds
# the header's memory; the byte limit is a third of the reference implementation's 100 MB,
# about ten times the largest real header.
MAX_HEADER_BYTES = 32 << 20
MAX_TENSORS_PER_FILE = 1 << 17
# A compared tensor streams whole rows and keeps a few fp64 values per channel: rows of more
# elements, or more rows, than this are refused (the widest real rows have ~10^5 elements,
# the longest vocabularies ~3·10^5 rows).
MAX_ROW_ELEMENTS = 1 << 20
MAX_ROWS = 1 << 21


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: ``offset`` is absolute in ``path``; shape as stored."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: str
    offset: int
    nbytes: int

    @property
    def itemsize(self) -> int:
        return ITEM_SIZES[self.dtype]

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def row_elements(self) -> int:
        """Elements of one slice along the first axis (all later axes flattened)."""
        return math.prod(self.shape[1:])

    @property
    def row_bytes(self) -> int:
        """Bytes of one slice along the first axis."""
        return self.row_elements * self.itemsize


def _bad(path: str, why: str) -> InputError:
    return InputError(f"{path}: not a valid safetensors file ({why})")


def read_header(path: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate the header of ``path``; returns (tensors by name, metadata)."""
    size, raw = _header_bytes(path)
    if raw.count(b"{") > MAX_TENSORS_PER_FILE + 2:   # one object per entry, besides the header's own
        raise _bad(path, f"header declares more than {MAX_TENSORS_PER_FILE} tensors, the limit dora-diag reads")
    data_start = 8 + len(raw)
    header = parse_json(raw, path, "safetensors header", max_values=16 * MAX_TENSORS_PER_FILE)
    del raw
    if not isinstance(header, dict):
        raise _bad(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise _bad(path, "__metadata__ is not an object of strings")
    tensors = {_unicode(path, name): _tensor_info(path, name, entry, data_start, size)
               for name, entry in header.items()}
    _check_layout(path, tensors, data_start, size)
    return tensors, {_unicode(path, k): _unicode(path, v) for k, v in metadata.items()}


def _header_bytes(path: str) -> tuple[int, bytes]:
    """(file size, the N header bytes) of a regular file, N checked against the limit and the size."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):   # a FIFO would block the open below forever
            raise _bad(path, "not a regular file")
        size = st.st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _bad(path, f"file is {size} bytes, shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise _bad(path, f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
            if 8 + n > size:
                raise _bad(path, f"header of {n} bytes runs past the end of a {size}-byte file; truncated?")
            return size, f.read(n)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def _unicode(path: str, text: str) -> str:
    """``text`` if it is valid Unicode: JSON escapes can spell lone surrogates, which the
    reference reader refuses and no output could encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(path, f"name {text!r} is not valid Unicode (a lone surrogate)") from None
    return text


def _tensor_info(path: str, name: str, entry: object, data_start: int, size: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise _bad(path, f"entry for {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in ITEM_SIZES:
        raise _bad(path, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(_is_int(s) and s >= 0 for s in shape)):
        raise _bad(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise _bad(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    expected = math.prod(shape) * ITEM_SIZES[dtype]
    if begin < 0 or end - begin != expected:
        raise _bad(path, f"tensor {name!r}: data_offsets {offsets} do not match shape {shape} of {dtype}")
    if data_start + end > size:
        raise _bad(path, f"tensor {name!r} ends at byte {data_start + end} but the file has {size}; truncated?")
    if dtype in FLOAT_DTYPES and len(shape) >= 2:
        _check_measurable(path, name, shape)
    return TensorInfo(name, dtype, tuple(shape), path, data_start + begin, expected)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_measurable(path: str, name: str, shape: list[int]) -> None:
    """Refuse weight shapes whose rows, or whose per-channel results, would not fit the memory bound."""
    row = math.prod(shape[1:])
    if row > MAX_ROW_ELEMENTS:
        raise InputError(f"{path}: tensor {name!r} {shape} has rows of {row} values; dora-diag streams rows "
                         f"of at most {MAX_ROW_ELEMENTS} values")
    if shape[0] > MAX_ROWS:
        raise InputError(f"{path}: tensor {name!r} {shape} has {shape[0]} rows; dora-diag measures at most "
                         f"{MAX_ROWS} channels per tensor")


def _check_layout(path: str, tensors: dict[str, TensorInfo], data_start: int, size: int) -> None:
    """The data section is the tensors back to back, in some order, with nothing between,
    shared or left over: the format requires it and the reference reader checks it."""
    end, data_bytes = 0, size - data_start
    for info in sorted(tensors.values(), key=lambda t: (t.offset, t.nbytes)):
        begin = info.offset - data_start
        if begin != end:
            why = "overlaps the tensor before it" if begin < end else f"leaves a gap of {begin - end} bytes before it"
            raise _bad(path, f"tensor {info.name!r} {why} in the data section")
        end = begin + info.nbytes
    if end != data_bytes:
        raise _bad(path, f"the tensors cover {end} of the {data_bytes} bytes of the data section")


# Read-ahead window for sequential streams: large enough to keep a disk busy while the
# kernel computes on a block, small enough that the base and fine-tuned files, read in
# alternation, do not evict each other's pages or seek-thrash. In bench_scheduling
# (reports/benchmarks.md) 0 to 64 MiB measure within noise of each other; 4 MiB is the smallest
# window that never measured slower, and not 0 because drop-behind works within the window.
STREAM_READAHEAD = 4 << 20


class RowReader:
    """Reads row ranges of tensors with ``preadv`` into fresh or caller-owned buffers.

    Files are opened when read, through the process-wide pool of descriptors (``fd_pool``),
    and closed at ``close`` or when the pool needs room. With ``readahead`` > 0 each
    read also asks the kernel (``POSIX_FADV_WILLNEED``, asynchronous) for the next that many
    bytes of the file, so a sequential stream finds its data in the page cache while it
    computes on the previous block; the request is renewed in half-window steps to keep the
    calls rare when the cache is already warm. With ``drop_behind`` the pages just read leave
    the page cache (a stream larger than memory would otherwise evict everything else first).

    Safe to share between threads: each thread keeps its own read-ahead window per file.
    """

    def __init__(self, readahead: int = 0) -> None:
        self._paths: set[str] = set()
        self._advised: dict[tuple[str, int], int] = {}   # (path, thread) -> end of the range requested
        self._lock = threading.Lock()
        self.readahead = readahead if hasattr(os, "posix_fadvise") else 0
        self.drop_behind = False
        self.bytes_read = 0

    def read_rows(self, info: TensorInfo, start: int, stop: int, out=None, ops=None):
        """Rows ``start:stop`` along axis 0, shape ``(stop - start, *info.shape[1:])``.

        ``out``, a uint8 CPU buffer (numpy array or torch tensor) of at least that many bytes, is
        filled and viewed instead of allocating (the streamer reuses one per source, two on
        CUDA); the rows are of ``out``'s kind (``arrays``), else of ``ops``' (torch tensors when
        both are None).
        """
        nbytes = (stop - start) * info.row_bytes
        buf = (ops or torch_ops()).empty_bytes(nbytes) if out is None else out[:nbytes]
        self._pread_into(info, buf, info.offset + start * info.row_bytes)
        return ops_of(buf).view(buf, info.dtype, (stop - start, *info.shape[1:]))

    def read_all(self, info: TensorInfo, ops=None):
        """The whole tensor (small ones: adapter factors, fp8 scales), as ``ops``' arrays (torch
        tensors when None)."""
        ops = ops or torch_ops()
        buf = ops.empty_bytes(info.nbytes)
        self._pread_into(info, buf, info.offset)
        return ops.view(buf, info.dtype, info.shape)

    def _pread_into(self, info: TensorInfo, buf, offset: int) -> None:
        with self._lock:
            self._paths.add(info.path)
        with POOL.fd(info.path) as fd:
            done = self._pread_all(fd, info, memoryview(ops_of(buf).numpy(buf)), offset)
            if self.drop_behind and self.readahead:
                os.posix_fadvise(fd, offset, done, os.POSIX_FADV_DONTNEED)
        with self._lock:
            self.bytes_read += done

    def _pread_all(self, fd: int, info: TensorInfo, view: memoryview, offset: int) -> int:
        if self.readahead:
            self._read_ahead(fd, info.path, offset + len(view))
        done = 0
        while done < len(view):
            try:
                got = os.preadv(fd, [view[done:]], offset + done)
            except OSError as e:
                raise InputError(f"{info.path}: read error in tensor {info.name!r} ({e.strerror or e})") from None
            if got == 0:
                raise InputError(f"{info.path}: unexpected end of file in tensor {info.name!r}; truncated?")
            done += got
        return done

    def _read_ahead(self, fd: int, path: str, end: int) -> None:
        key = (path, threading.get_ident())
        until = self._advised.get(key, 0)
        if until < end or until > end + self.readahead:   # first read, or a jump: new window
            until = end
        if until - end < self.readahead // 2:
            os.posix_fadvise(fd, until, end + self.readahead - until, os.POSIX_FADV_WILLNEED)
            self._advised[key] = end + self.readahead

    def close(self) -> None:
        POOL.close(self._paths)
        self._paths.clear()
        self._advised.clear()

    def __enter__(self) -> "RowReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
