"""Where the kernels run: ``auto`` picks CUDA when torch sees a GPU."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from ..errors import InputError
from ..options import DEVICES


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
