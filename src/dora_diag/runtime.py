"""The process the library runs in: which device (``auto`` picks CUDA when torch sees a GPU),
how many tensors stream at once with how many torch threads, and the allocator tuning that
streaming needs. ``compare``, ``verify`` and Ray workers call ``tune_allocator`` themselves, so
a notebook gets the same speed as the CLI.

Nothing here imports torch unless CUDA may be there to find (or torch is loaded already): a CPU
comparison runs on numpy (``arrays``) and starts ~2 s sooner without it."""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import sys
from contextlib import contextmanager
from typing import Iterator

from .errors import InputError
from .options import DEVICES


class Device(str):
    """A resolved device name, ``"cpu"`` or ``"cuda[:N]"``: torch takes it wherever it takes a
    device; ``type`` is its kind, as ``torch.device.type``."""

    @property
    def type(self) -> str:
        return self.split(":")[0]


def resolve_device(device: str = "auto") -> Device:
    """The device ``device`` names (a name or a torch.device); ``auto`` is CUDA when torch sees a GPU."""
    name = str(device)
    if name == "auto":
        return Device("cuda" if _cuda_available() else "cpu")
    if name.startswith("cuda"):
        if not _cuda_available():
            raise InputError(f"device {name!r}: torch sees no CUDA device on this machine")
        return Device(name)
    if name == "cpu":
        return Device("cpu")
    raise InputError(f"device must be one of {', '.join(DEVICES)}, not {name!r}")


def _cuda_available() -> bool:
    """torch.cuda.is_available(), without importing torch where it cannot be true: torch is
    not installed, or on Linux no GPU device node exists (NVIDIA's /dev/nvidia*, ROCm's /dev/kfd,
    WSL's /dev/dxg), which CUDA and ROCm need."""
    if "torch" not in sys.modules:
        if importlib.util.find_spec("torch") is None:
            return False
        if sys.platform.startswith("linux") and not any(glob.glob(p) for p in ("/dev/nvidia[0-9]*", "/dev/kfd",
                                                                                   "/dev/dxg")):
            return False
    import torch

    return torch.cuda.is_available()


# More tensors at once only pay while each keeps a core busy; past 4 the reads contend.
MAX_CPU_STREAMS = 4


def cpu_streams(device: str) -> int:
    """How many tensors to stream at once: on CPU one per core (up to ``MAX_CPU_STREAMS``), each
    with single-threaded torch ops. Measured on 2 cores (benchmarks/): 2 streams x 1 thread run
    ~6% faster warm and ~1.6x faster cold than 1 stream x 2 threads, whose per-block ops are too
    small to split well and which leaves the disk one request at a time. A GPU gets one."""
    return 1 if Device(device).type != "cpu" else max(1, min(MAX_CPU_STREAMS, cpu_threads()))


def cpu_threads() -> int:
    """torch's intra-op thread count where torch is loaded, else the cores this process may
    run on (what torch would start with)."""
    if "torch" in sys.modules:
        return sys.modules["torch"].get_num_threads()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block, then restored (nothing to do
    where torch is not loaded: the numpy engine runs one thread per stream)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def exact_float32() -> Iterator[None]:
    """torch's fp32 matmuls at full fp32 precision while measuring; the caller's setting after.

    Training scripts and notebooks often lower it: ``torch.set_float32_matmul_precision("high")``
    is TF32 on CUDA (10 mantissa bits), ``"medium"`` also bf16 (7 bits) on CPUs with AMX or
    AVX512-BF16. The adapter factor products and the CUDA kernel need fp32's 23. The setting is
    process-wide: a training thread running alongside gets fp32 matmuls meanwhile. A torch first
    imported during the run starts at full precision anyway.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    matmuls = [getattr(getattr(torch.backends, b, None), "matmul", None) for b in ("mkldnn", "cuda")]
    if all(hasattr(m, "fp32_precision") for m in matmuls):
        # torch >= 2.9: per-backend settings. Its legacy getter raises once both APIs were used,
        # so the new one is used wherever it exists.
        saved = [m.fp32_precision for m in matmuls]
        for m in matmuls:
            m.fp32_precision = "ieee"

        def restore() -> None:
            for m, value in zip(matmuls, saved):
                m.fp32_precision = value
    else:
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")

        def restore() -> None:
            torch.set_float32_matmul_precision(before)
    try:
        yield
    finally:
        restore()


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
