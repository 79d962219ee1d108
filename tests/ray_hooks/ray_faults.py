"""Fault injection for the Ray executor tests, installed in every Ray worker process by the
job's ``worker_process_setup_hook`` (this directory is on the workers' PYTHONPATH).

A test arms a fault by creating ``ARMED`` in ``$DORA_DIAG_TEST_FAULTS``; the first task that
claims it (an atomic rename to ``FIRED``) kills its own worker process mid-task, as a lost node
would, so that Ray's task retries must finish the run. ``HOLD`` holding a node id instead
makes the first task on that node claim it (renamed to ``HELD``) and wait there until the test
has removed the node (at most ``HOLD_S``, so a failed test cannot hang).
"""

from __future__ import annotations

import os
import time

HOLD_S = 60


def _held(faults: str) -> bool:
    """True when this task is on the node named in ``HOLD`` and claimed it."""
    import ray

    hold = os.path.join(faults, "HOLD")
    try:
        with open(hold) as f:
            node = f.read().strip()
    except FileNotFoundError:
        return False
    if node != ray.get_runtime_context().get_node_id():
        return False
    try:
        os.rename(hold, os.path.join(faults, "HELD"))
    except FileNotFoundError:
        return False
    return True


def install() -> None:
    from dora_diag.analysis.executors import ray_cluster

    faults = os.environ["DORA_DIAG_TEST_FAULTS"]
    run_range = ray_cluster.run_range

    def run_range_or_die(streamer, tp, task):
        try:
            os.rename(os.path.join(faults, "ARMED"), os.path.join(faults, "FIRED"))
        except FileNotFoundError:
            if _held(faults):
                time.sleep(HOLD_S)   # the node is removed meanwhile, this worker with it
            return run_range(streamer, tp, task)
        os._exit(1)

    ray_cluster.run_range = run_range_or_die
