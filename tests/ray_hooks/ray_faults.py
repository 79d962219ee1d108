"""Fault injection for the Ray executor tests, installed in every Ray worker process by the
job's ``worker_process_setup_hook`` (this directory is on the workers' PYTHONPATH).

A test arms a fault by creating ``ARMED`` in ``$DORA_DIAG_TEST_FAULTS``; the first task that
claims it (an atomic rename to ``FIRED``) kills its own worker process mid-task, as a lost node
would, so that Ray's task retries must finish the run.
"""

from __future__ import annotations

import os


def install() -> None:
    from dora_diag.analysis.executors import ray_cluster

    faults = os.environ["DORA_DIAG_TEST_FAULTS"]
    run_range = ray_cluster.run_range

    def run_range_or_die(streamer, tp, task):
        try:
            os.rename(os.path.join(faults, "ARMED"), os.path.join(faults, "FIRED"))
        except FileNotFoundError:
            return run_range(streamer, tp, task)
        os._exit(1)

    ray_cluster.run_range = run_range_or_die
