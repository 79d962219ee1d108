"""``--executor``, ``--ray-address`` and ``--task-mb``: one declaration for compare, check and verify."""

from __future__ import annotations

import click

from ..options import DEFAULT_TASK_BYTES, EXECUTORS
from .numbers import FiniteRange

MAX_TASK_MB = 1 << 20


def executor_options(fn):
    """Adds the options; the command gets ``executor``, ``ray_address`` and ``task_mb``."""
    for option in reversed((
        click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
                     help="Stream on this machine, or in row-range tasks on a Ray cluster (needs "
                          "dora-diag[ray]; every node must see the inputs at the same paths)."),
        click.option("--ray-address", envvar="RAY_ADDRESS", metavar="ADDR",
                     help="The Ray cluster for --executor ray (default $RAY_ADDRESS, else Ray started here)."),
        click.option("--task-mb", type=FiniteRange(min=0, max=MAX_TASK_MB, min_open=True),
                     default=DEFAULT_TASK_BYTES / 2**20, show_default=True,
                     help="With --executor ray: MiB each task streams (base rows and full checkpoints' rows)."),
    )):
        fn = option(fn)
    return fn


def executor_kwargs(executor: str, ray_address: str | None, task_mb: float) -> dict:
    """The library's keyword arguments for the options."""
    return {"executor": executor, "ray_address": ray_address, "task_bytes": max(1, int(task_mb * 2**20))}
