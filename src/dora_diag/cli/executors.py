"""``--executor``, ``--ray-address`` and ``--task-mb``: one declaration for compare, check and verify."""

from __future__ import annotations

import click

from ..options import DEFAULT_TASK_BYTES, EXECUTORS
from .numbers import FiniteRange

MAX_TASK_MB = 1 << 20


def executor_options(fn=None, *, task_mb: bool = True):
    """Adds the options; the command gets ``executor``, ``ray_address`` and (unless
    ``task_mb=False``: verify's tasks are whole tensors) ``task_mb``."""
    if fn is None:
        return lambda f: executor_options(f, task_mb=task_mb)
    options = (
        click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
                     help="Stream on this machine, or in row-range tasks on a Ray cluster (needs "
                          "dora-diag[ray]; every node must see the inputs at the same paths)."),
        click.option("--ray-address", envvar="RAY_ADDRESS", metavar="ADDR",
                     help="The Ray cluster for --executor ray (default $RAY_ADDRESS, else one started here with "
                          "`ray start`, else a new one; `local`: always a new one on this machine)."),
        click.option("--task-mb", type=FiniteRange(min=0, max=MAX_TASK_MB, min_open=True),
                     default=DEFAULT_TASK_BYTES / 2**20, show_default=True,
                     help="With --executor ray: MiB each task streams (base rows and full checkpoints' rows)."),
    )
    for option in reversed(options if task_mb else options[:2]):
        fn = option(fn)
    return fn


def executor_kwargs(executor: str, ray_address: str | None, task_mb: float) -> dict:
    """The library's keyword arguments for the options."""
    return {"executor": executor, "ray_address": ray_address, "task_bytes": max(1, int(task_mb * 2**20))}
