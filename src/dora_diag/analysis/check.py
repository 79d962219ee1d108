"""``check()``: the library function behind ``dora-diag check`` — compare, then the verdict."""

from __future__ import annotations

import os

from ..options import CHECK_ALPHA, CHECK_MIN_R, CHECK_MIN_UNITS
from .analysis import Analysis
from .compare import compare
from .verdict import check_thresholds, verdict


def check(base: str | os.PathLike, *runs: str | os.PathLike, min_r: float = CHECK_MIN_R,
          alpha: float = CHECK_ALPHA, min_units: int = CHECK_MIN_UNITS, trials: dict[str, dict] | None = None,
          **compare_options) -> Analysis:
    """Compare ``runs`` with ``base`` and attach the "will DoRA help?" verdicts.

    Each run is ``[LABEL=]PATH``: a PEFT adapter, a run directory of ``checkpoint-N/`` adapters
    or full checkpoints, or one full fine-tuned checkpoint. LoRA-family runs get a decision;
    full fine-tuning and DoRA runs given alongside are described and serve as the reference
    their coupling is compared with. ``trials[label]`` is a matched LoRA-vs-DoRA trial block
    (``dora_diag.train.trial.run_trial``) for that run. ``compare_options`` go to ``compare``
    (axis, device, ...). Returns the comparison with the verdicts (``verdict.verdict``) in
    ``analysis.verdicts``, and so in ``to_json()`` and the HTML report.
    """
    check_thresholds(min_r, alpha, min_units)  # before minutes of streaming, not after
    analysis = compare(base, *runs, **compare_options)
    return analysis.with_verdicts(verdict(analysis, min_r=min_r, alpha=alpha, min_units=min_units, trials=trials))
