"""Numeric option types that refuse what click's ranges let through: NaN and infinities."""

from __future__ import annotations

import math

import click

MAX_BLOCK_MB = 1024   # --block-mb: the block is in memory a few times; larger would defeat the memory bound


class FiniteRange(click.FloatRange):
    """A float in ``[min, max]`` (ends open as asked) that is also finite: ``nan`` passes every
    comparison click's range makes, and ``inf`` passes an open-ended one."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{rv} is not a finite number.", param, ctx)
        return rv
