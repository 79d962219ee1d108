"""The local executor: every planned tensor streamed on this machine (today's path).

On CPU several tensors stream at once (``runtime.cpu_streams``), each in its own thread,
and torch's intra-op thread count (where torch is loaded) is divided among them while they run.
"""

from __future__ import annotations

import threading
from contextlib import closing
from typing import Callable, Iterator

from ...runtime import Device, cpu_streams, cpu_threads, intra_op_threads
from ..stream import Streamer, TargetResult, run_all
from .job import Job, Opened


class LocalExecutor:
    kind = "local"

    def __init__(self) -> None:
        self.device_label = ""

    def results(self, job: Job, opened: Opened, advance: Callable[[int], None]) -> Iterator[list[TargetResult]]:
        """Each planned tensor's results, in plan order; ``advance(nbytes)`` as bytes are read.
        ``job.device`` is resolved already (``compare`` does it once, before opening any file)."""
        dev = Device(job.device)
        self.device_label = device_label(dev)
        # A source that is not parallel-safe (adapters cache one tensor's factors) goes tensor by tensor.
        streams = cpu_streams(dev) if all(s.parallel_safe for _, s in opened.sources) else 1
        advance = _serialized(advance)
        streamers = [Streamer(opened.reader, dev, job.axis, job.block_bytes, advance) for _ in range(streams)]
        if stream_bytes(opened) > available_memory() // 2:
            # The page cache cannot keep this stream anyway: reading it through would evict
            # everything else first (and cost reclaim work, ~15% on a 28 GB pair in 24 GB).
            opened.reader.drop_behind = True
            for _, s in opened.sources:
                s.drop_behind()
        with intra_op_threads(cpu_threads() // streams), \
                closing(run_all(opened.plan.tensors, streamers)) as all_results:
            yield from all_results

    def map(self, job, items, opener, fn, opened) -> list:
        """``[fn(opened, item) for item in items]``: the driver's own opened inputs serve."""
        return [fn(opened, item) for item in items]

    def meta(self) -> dict:
        return {"kind": self.kind}


def device_label(dev) -> str:
    """The device as the JSON records it (with the GPU's name)."""
    if Device(dev).type == "cpu":
        return "cpu"
    import torch

    return f"{dev} ({torch.cuda.get_device_name(dev)})"


def stream_bytes(opened: Opened) -> int:
    """Bytes the planned tensors stream: each base tensor and every stored counterpart."""
    return sum(t.info.nbytes * (1 + sum(x.source.stored for x in t.targets)) for t in opened.plan.tensors)


def _serialized(fn: Callable[[int], None]) -> Callable[[int], None]:
    """``fn`` callable from several streaming threads (a progress bar is not thread-safe)."""
    lock = threading.Lock()

    def call(n: int) -> None:
        with lock:
            fn(n)
    return call


def available_memory() -> int:
    """MemAvailable from /proc/meminfo in bytes; unknown (not Linux) counts as unlimited."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62
