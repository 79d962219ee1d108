"""The Ray executor: a comparison's tensors split into row-range tasks run across a Ray cluster.

Each task opens the inputs itself from the paths the driver was given (so every node must see
them: shared storage), builds the same plan from the headers, streams its base rows once
against the same rows of every checkpoint and adapter, and returns per-channel fp64 results
(``tasks.RangeResult``), never weight tensors. A worker process keeps its opened inputs for the
next task of the same job. Lost workers or nodes are retried by Ray (``max_retries``); a task
that fails on bad input fails the run with its ``InputError``.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Callable, Iterator

from ...errors import InputError
from ..stream import Streamer, TargetResult
from .job import Job, Opened, open_job
from .local import device_label
from .tasks import DEFAULT_TASK_BYTES, RangeResult, RangeTask, check_task, merge, run_range, split

DEFAULT_MAX_RETRIES = 3
_POLL_S = 0.5


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError('executor "ray" needs Ray: pip install "dora-diag[ray]"') from None
    return ray


class RayExecutor:
    kind = "ray"

    def __init__(self, address: str | None = None, task_bytes: int = DEFAULT_TASK_BYTES,
                 max_retries: int = DEFAULT_MAX_RETRIES):
        self.ray = import_ray()
        self.address, self.task_bytes, self.max_retries = address, task_bytes, max_retries
        self.device_label = ""
        self._meta: dict = {"kind": self.kind}

    def results(self, job: Job, opened: Opened, advance: Callable[[int], None]) -> Iterator[list[TargetResult]]:
        """Each planned tensor's results in plan order, as soon as all its ranges are in."""
        ray = self.ray
        started = time.perf_counter()
        owned = self._connect()
        tasks = split(opened.plan, job, self.task_bytes)
        attempts = _attempts_actor(ray).remote()
        remote = ray.remote(_run_task).options(
            max_retries=self.max_retries, retry_exceptions=False, num_cpus=1,
            num_gpus=1 if job.device == "cuda" else 0, scheduling_strategy="SPREAD")
        job_ref = ray.put(job)
        refs = {remote.remote(job_ref, t, attempts): t for t in tasks}
        done: dict[int, list[RangeResult]] = {}
        try:
            pieces = self._collect(refs, advance, done)
            last = len(opened.plan.tensors) - 1
            for i, tp in enumerate(opened.plan.tensors):
                while len(done.get(i, ())) < sum(t.index == i for t in tasks):
                    next(pieces)
                if i == last:   # every task has finished: the caller need not resume us after it
                    self._record(ray, tasks, attempts, started)
                yield merge(tp, [r for _, r in sorted(done.pop(i), key=lambda x: x[0])])
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)
            ray.kill(attempts)
            if owned:
                ray.shutdown()

    def _collect(self, refs: dict, advance: Callable[[int], None], done: dict) -> Iterator[None]:
        """Wait for the tasks; after each finished one, its result is in ``done[index]``."""
        ray = self.ray
        pending = list(refs)
        self._per_node: dict[str, int] = {}
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=_POLL_S)
            for ref in ready:
                task = refs[ref]
                result = _get(ray, ref)
                self.device_label = self.device_label or result.device
                self._per_node[result.node] = self._per_node.get(result.node, 0) + result.bytes_read
                advance(task.nbytes)
                done.setdefault(task.index, []).append((task.start, result))
                yield

    def _connect(self) -> bool:
        """Connect unless already connected; True when this call started the connection."""
        ray = self.ray
        if ray.is_initialized():
            return False
        try:
            ray.init(address=self.address, log_to_driver=False, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InputError(f"cannot connect to the Ray cluster at {self.address or 'RAY_ADDRESS'}: {e}") from None
        return True

    def _record(self, ray, tasks: list[RangeTask], attempts, started: float) -> None:
        counts = ray.get(attempts.counts.remote())
        self._meta = {
            "kind": self.kind,
            "address": ray.get_runtime_context().gcs_address,
            "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
            "nodes_used": len(self._per_node),
            "tasks": len(tasks),
            "task_bytes": self.task_bytes,
            "bytes_per_node": dict(sorted(self._per_node.items())),
            "retries": sum(n - 1 for n in counts.values()),
            "wall_s": round(time.perf_counter() - started, 3),
        }

    def meta(self) -> dict:
        return self._meta


def _get(ray, ref) -> RangeResult:
    """A task's result; its bad input is the run's ``InputError`` (the local one-line message)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, InputError):
            raise InputError(str(e.cause)) from None
        raise


def _attempts_actor(ray):
    """Counts the attempts of each task (a retried task starts again): the JSON's retries."""
    @ray.remote(num_cpus=0)
    class Attempts:
        def __init__(self) -> None:
            self.started: dict[tuple[int, int], int] = {}

        def start(self, key: tuple[int, int]) -> None:
            self.started[key] = self.started.get(key, 0) + 1

        def counts(self) -> dict:
            return self.started
    return Attempts


# Per worker process: the job whose inputs are open, and how to close them.
_open: dict = {}


def _opened(job: Job) -> tuple[Opened, Streamer]:
    if _open.get("job") != job:
        if "stack" in _open:
            _open.pop("stack").close()
        from ...metrics.device import resolve_device

        stack = ExitStack()
        opened = open_job(job, stack)
        dev = resolve_device(job.device)
        _open.update(job=job, stack=stack, opened=opened, streamer=Streamer(opened.reader, dev, job.axis, job.block_bytes))
    return _open["opened"], _open["streamer"]


def _run_task(job: Job, task: RangeTask, attempts) -> RangeResult:
    """One range on a worker: opens (or reuses) the job's inputs and streams the range."""
    import ray

    ray.get(attempts.start.remote((task.index, task.start)))
    opened, streamer = _opened(job)
    before = opened.bytes_read()
    parts = run_range(streamer, check_task(opened, task), task)
    return RangeResult(parts, opened.bytes_read() - before, device_label(streamer.device),
                       ray.get_runtime_context().get_node_id())
