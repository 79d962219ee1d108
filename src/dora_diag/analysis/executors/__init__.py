"""Where a comparison's tensors are streamed: ``local`` (this machine, the default) or ``ray``
(row-range tasks across a Ray cluster, ``ray_cluster``; imported only when asked for).

An executor has ``results(job, opened, advance)``, yielding each planned tensor's
``stream.TargetResult`` list in plan order (``advance(nbytes)`` drives a progress bar);
``map(job, items, opener, fn, opened)``, ``[fn(inputs, item) ...]`` where a Ray worker opens
its inputs with ``opener(job, stack)`` (``verify``'s tensors); ``device_label`` once it has
run, and ``meta()``: the JSON's ``executor`` block.
"""

from __future__ import annotations

from ...errors import InputError
from ...options import DEFAULT_TASK_BYTES, EXECUTORS
from .job import Job, Opened, job_of, open_job

__all__ = ["EXECUTORS", "DEFAULT_TASK_BYTES", "Job", "Opened", "job_of", "make_executor", "open_job"]


def make_executor(kind: str = "local", address: str | None = None, task_bytes: int = DEFAULT_TASK_BYTES):
    """``address``: a Ray cluster (``ray://...`` or ``host:port``); None uses ``RAY_ADDRESS``,
    else starts Ray on this machine."""
    if kind == "local":
        from .local import LocalExecutor

        return LocalExecutor()
    if kind == "ray":
        from .ray_cluster import RayExecutor

        return RayExecutor(address, task_bytes)
    raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, not {kind!r}")
