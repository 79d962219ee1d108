"""The process the library runs in: which device (``auto`` picks CUDA when torch sees a GPU),
how many tensors stream at once with how many torch threads, and the allocator tuning that
streaming needs. ``compare``, ``verify`` and Ray workers call ``tune_allocator`` themselves, so
a notebook gets the same speed as the CLI."""

from __future__ import annotations

import ctypes
import sys
from contextlib import contextmanager
from typing import Iterator

import torch

from .errors import InputError
from .options import DEVICES


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r}: torch sees no CUDA device on this machine")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"device must be one of {', '.join(DEVICES)}, not {name!r}")


# More tensors at once only pay while each keeps a core busy; past 4 the reads contend.
MAX_CPU_STREAMS = 4


def cpu_streams(device: torch.device) -> int:
    """How many tensors to stream at once: on CPU one per core (up to ``MAX_CPU_STREAMS``), each
    with single-threaded torch ops. Measured on 2 cores (benchmarks/): 2 streams x 1 thread run
    ~6% faster warm and ~1.6x faster cold than 1 stream x 2 threads, whose per-block ops are too
    small to split well and which leaves the disk one request at a time. A GPU gets one."""
    return 1 if device.type != "cpu" else max(1, min(MAX_CPU_STREAMS, torch.get_num_threads()))


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


_tuned = False


def tune_allocator() -> None:
    """Streaming allocates and frees MB-sized blocks from several threads. With glibc's dynamic
    mmap/trim thresholds that memory goes back to the OS after each block and is page-faulted in
    again for the next one: measured on a 3.8 GB pair, 2.5x the wall time, mostly system time.
    Fixed thresholds keep it in the heap; peak memory is still bounded by the block size. Once
    per process; nothing to do off glibc."""
    global _tuned
    if _tuned or not sys.platform.startswith("linux"):
        return
    _tuned = True
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)
