"""What actually happened and whether a call got it right: seed-level intervals and the rules.

The independent unit of an outcome is the training seed: a seed fixes the adapter
initialisation, the batch order and (for JSONL data) the held-out split, and LoRA and DoRA of
one seed share all three, so the seed's DoRA − LoRA difference is one paired observation.
"""

from __future__ import annotations

import math
import statistics

from scipy.stats import t as student_t

BETTER, WORSE, UNCLEAR = "DoRA better", "DoRA worse", "no clear difference"
RIGHT, WRONG, NO_CALL = "right", "wrong", "no call"


def seed_interval(values: list[float], level: float = 0.95) -> dict:
    """Mean, sample sd and the t-interval of the mean over paired seed differences."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "ci_low": None, "ci_high": None}
    sd = statistics.stdev(values)
    half = student_t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def outcome(interval: dict, higher_is_better: bool = False) -> str:
    """The call a DoRA − LoRA difference supports (eval loss: lower is better; accuracy: higher);
    only an interval that excludes 0 counts as a difference."""
    if interval["ci_low"] is None:
        return UNCLEAR
    below, above = interval["ci_high"] < 0, interval["ci_low"] > 0
    if below or above:
        return BETTER if above == higher_is_better else WORSE
    return UNCLEAR


def heuristic_grade(decision: str | None, actual: str) -> str:
    """dora_likely_helps is right when DoRA was better; marginal (DoRA adds little) is right when it
    was not; inconclusive, not_applicable or a missing decision make no call."""
    if decision == "dora_likely_helps":
        return RIGHT if actual == BETTER else WRONG
    if decision == "marginal":
        return WRONG if actual == BETTER else RIGHT
    return NO_CALL


def trial_grade(trial_call: str, actual: str) -> str:
    """A trial is right when its own seed interval supports the same call as the full runs'."""
    return RIGHT if trial_call == actual else WRONG

