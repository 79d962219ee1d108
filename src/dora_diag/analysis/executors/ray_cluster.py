"""The Ray executor: a comparison's tensors split into row-range tasks run across a Ray cluster.

Each task opens the inputs itself from the paths the driver was given (so every node must see
them: shared storage), builds the same plan from the headers, streams its base rows once
against the same rows of every checkpoint and adapter, and returns per-channel fp64 results
(``tasks.RangeResult``), never weight tensors. A worker process keeps its opened inputs for the
next task of the same job. Lost workers or nodes are retried by Ray (``max_retries``); a task
that fails on bad input fails the run with its ``InputError``. ``map`` runs any per-item
function the same way (``verify``: one task per tensor).
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import ExitStack
from typing import Any, Callable, Iterator, Sequence

from ...errors import InputError
from ..stream import Streamer, TargetResult
from .job import Job, Opened, open_job
from .local import device_label
from .tasks import DEFAULT_TASK_BYTES, RangeResult, RangeTask, check_task, merge, run_range, split

DEFAULT_MAX_RETRIES = 3
_POLL_S = 0.5
CONNECT_TIMEOUT_S = 5


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
        tasks = split(opened.plan, job, self.task_bytes)
        pieces = self._ordered(job, tasks, _open_compare, _range_task, [t.nbytes for t in tasks], advance,
                               gpu=job.device == "cuda")
        try:
            for i, tp in enumerate(opened.plan.tensors):
                mine = [next(pieces) for t in tasks if t.index == i]
                self.device_label = self.device_label or mine[0].device
                yield merge(tp, mine)
        finally:
            pieces.close()

    def map(self, job: Any, items: Sequence, opener: Callable, fn: Callable, opened: Any = None) -> list:
        """``[fn(opener(job, stack), item) for item in items]``, one task per item, each worker
        opening the inputs itself (``opened``, the driver's, is not used); ``opener`` and ``fn``
        are module-level functions (workers import them)."""
        return list(self._ordered(job, items, opener, fn, [0] * len(items), lambda n: None))

    def _ordered(self, job: Any, items: Sequence, opener: Callable, fn: Callable, nbytes: list[int],
                 advance: Callable[[int], None], gpu: bool = False) -> Iterator:
        """The items' results in item order, each as soon as it and those before it are in;
        every task is submitted at once. Closing it cancels what still runs."""
        ray = self.ray
        started = time.perf_counter()
        owned = self._connect()
        attempts = None
        refs: list = []
        finished: set = set()
        try:
            if gpu and ray.cluster_resources().get("GPU", 0) < 1:
                raise InputError('device "cuda": the Ray cluster has no GPU (its tasks would wait forever)')
            attempts = _attempts_actor(ray).remote()
            remote = ray.remote(_task).options(
                max_retries=self.max_retries, retry_exceptions=False, num_cpus=1, num_gpus=1 if gpu else 0,
                scheduling_strategy="SPREAD")
            job_ref = ray.put(job)
            refs = [remote.remote(job_ref, i, item, opener, fn, attempts) for i, item in enumerate(items)]
            position = {ref: i for i, ref in enumerate(refs)}
            done: dict[int, Any] = {}
            per_node: dict[str, int] = {}
            pending = list(refs)
            for i in range(len(refs)):
                while i not in done:
                    ready, pending = ray.wait(pending, num_returns=1, timeout=_POLL_S)
                    for ref in ready:
                        finished.add(ref)
                        result, node = _get(ray, ref)
                        done[position[ref]] = result
                        per_node[node] = per_node.get(node, 0) + getattr(result, "bytes_read", 0)
                        advance(nbytes[position[ref]])
                if i == len(refs) - 1:   # all in: the caller need not resume us after the last one
                    self._record(ray, len(refs), per_node, attempts, started)
                yield done.pop(i)
        finally:
            # Only the unfinished: a running task stops at its next Python step, its worker lives
            # on. Cancelling finished ones too could abort the driver: Ray 2.60's task manager
            # fails a check ("Tried to complete task that was not pending") for a retried task
            # whose reply and cancel cross (seen in CI after a node loss).
            for ref in refs:
                if ref not in finished:
                    ray.cancel(ref)
            if attempts is not None:
                ray.kill(attempts)
            if owned:
                ray.shutdown()

    def _connect(self) -> bool:
        """Connect unless already connected; True when this call started the connection."""
        ray = self.ray
        if ray.is_initialized():
            return False
        _check_reachable(self.address or os.environ.get("RAY_ADDRESS"))
        try:
            ray.init(address=self.address, log_to_driver=False, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InputError(f"cannot connect to the Ray cluster at {self.address or 'RAY_ADDRESS'}: {e}") from None
        return True

    def _record(self, ray, tasks: int, per_node: dict[str, int], attempts, started: float) -> None:
        counts = ray.get(attempts.counts.remote())
        self._meta = {
            "kind": self.kind,
            "address": ray.get_runtime_context().gcs_address,
            "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
            "nodes_used": len(per_node),
            "tasks": tasks,
            "task_bytes": self.task_bytes,
            "bytes_per_node": dict(sorted(per_node.items())),
            "retries": sum(n - 1 for n in counts.values()),
            "wall_s": round(time.perf_counter() - started, 3),
        }

    def meta(self) -> dict:
        return self._meta


def _check_reachable(address: str | None) -> None:
    """A ``host:port`` that nothing answers on is an error at once (Ray itself retries for minutes)."""
    if not address or "://" in address or ":" not in address:
        return   # none (Ray starts here), "auto", or a ray:// client address Ray reports on itself
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as e:
        raise InputError(f"cannot reach the Ray cluster at {address}: {e}") from None


def _get(ray, ref) -> tuple:
    """A task's (result, node); its bad input is the run's ``InputError`` (the local
    one-line message)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, InputError):
            raise InputError(str(e.cause)) from None
        raise


def _attempts_actor(ray):
    """Counts the attempts of each task (a retried task starts again): the JSON's retries.
    Pinned to the driver's node: on a node that is lost mid-run it would take the run with it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    class Attempts:
        def __init__(self) -> None:
            self.started: dict[int, int] = {}

        def start(self, key: int) -> None:
            self.started[key] = self.started.get(key, 0) + 1

        def counts(self) -> dict:
            return self.started
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return Attempts.options(scheduling_strategy=here)


# Per worker process: the job whose inputs are open, what ``opener`` made of them, and how to close them.
_open: dict = {}


def _cached(job: Any, opener: Callable) -> Any:
    if _open.get("key") != (job, opener):
        if "stack" in _open:
            _open.pop("stack").close()
        stack = ExitStack()
        _open.update(key=(job, opener), stack=stack, opened=opener(job, stack))
    return _open["opened"]


def _task(job: Any, index: int, item: Any, opener: Callable, fn: Callable, attempts) -> tuple:
    """On a worker: ``fn(opened inputs, item)`` with this node's id; counts the attempt first."""
    import ray

    ray.get(attempts.start.remote(index))
    return fn(_cached(job, opener), item), ray.get_runtime_context().get_node_id()


def _open_compare(job: Job, stack: ExitStack) -> tuple[Opened, Streamer]:
    from ...runtime import resolve_device, tune_allocator

    tune_allocator()   # a worker process streams like the driver would
    opened = open_job(job, stack)
    return opened, Streamer(opened.reader, resolve_device(job.device), job.axis, job.block_bytes)


def _range_task(inputs: tuple[Opened, Streamer], task: RangeTask) -> RangeResult:
    """One range: its base rows streamed once against every target's."""
    opened, streamer = inputs
    before = opened.bytes_read()
    parts = run_range(streamer, check_task(opened, task), task)
    return RangeResult(parts, opened.bytes_read() - before, device_label(streamer.device))
