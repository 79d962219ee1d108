"""``check()``: the library function behind ``dora-diag check`` — compare, then the verdict."""

from __future__ import annotations

import os

from .analysis import Analysis
from .compare import compare
from .verdict import check_thresholds, verdict


def check(base: str | os.PathLike, run: str | os.PathLike, *, min_r: float = 0.3, alpha: float = 0.05,
          min_points: int = 6, **compare_options) -> Analysis:
    """Compare ``run`` with ``base`` and attach the "will DoRA help?" verdicts.

    ``run`` is ``[LABEL=]PATH``: a PEFT adapter, a run directory of ``checkpoint-N/`` adapters
    or full checkpoints, or one full fine-tuned checkpoint. ``compare_options`` go to
    ``compare`` (axis, device, ...). The verdicts (see ``verdict.verdict`` for the rule) are
    stored in ``analysis.meta["verdicts"]``, so ``to_json()`` and the HTML report carry them.
    """
    check_thresholds(min_r, alpha, min_points)  # before minutes of streaming, not after
    analysis = compare(base, run, **compare_options)
    analysis.meta["verdicts"] = verdict(analysis, min_r=min_r, alpha=alpha, min_points=min_points)
    return analysis
