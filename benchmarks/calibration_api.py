"""The calibration's only contact with the verdict, statistics and trial APIs (notes: verdict-api).

Each function returns plain JSON-ready values; a statistic this version of dora-diag does not
compute comes back as None, and the report prints it as missing.
"""

from __future__ import annotations

import math

import dora_diag

POOLED = "(pooled)"
# The pooled row's statistics the report shows: the paper's r and the two detrended ones.
STATISTICS = ("pearson_r", "within_checkpoint_r", "partial_r")
EXTRA_COLUMNS = ("n", "units", "checkpoints", "ci_method", "p_method")
VERDICT_FIELDS = ("run", "method", "decision", "decided_by", "statistic", "headline", "reason")


def _value(row, name: str):
    if name not in row.index:
        return None
    v = row[name]
    if isinstance(v, float) and math.isnan(v):
        return None
    return v.item() if hasattr(v, "item") else v


def pooled_stats(analysis, run: str) -> dict:
    """{statistic, statistic_ci_low, statistic_ci_high, statistic_p, n, units, ...} of ``run``'s pooled
    row; the stats columns drop the statistic's ``_r`` (``pearson_r`` -> ``pearson_ci_low``)."""
    stats = analysis.stats(by="module")
    row = stats[(stats["run"] == run) & (stats["module"] == POOLED)].iloc[0]
    out = {name: _value(row, name) for name in EXTRA_COLUMNS}
    for stat in STATISTICS:
        out[stat] = _value(row, stat)
        for part in ("ci_low", "ci_high", "p"):
            out[f"{stat}_{part}"] = _value(row, f"{stat.removesuffix('_r')}_{part}")
    return out


def verdicts(analysis) -> list[dict]:
    return [v.to_json() for v in analysis.verdicts]


def decisions(base: str, runs: dict[str, str], trials: dict[str, dict] | None = None, **options) -> dict:
    """``dora_diag.check(base, LABEL=DIR, ..., **options)``: {label: verdict fields + pooled stats}."""
    analysis = dora_diag.check(base, *(f"{label}={path}" for label, path in runs.items()), device="cpu",
                               trials=trials, **options)
    out = {}
    for v in verdicts(analysis):
        out[v["run"]] = {**{k: v.get(k) for k in VERDICT_FIELDS}, "stats": pooled_stats(analysis, v["run"])}
    return out


def trial(base: str, lora_run: str, steps: int | None, seeds: int) -> dict:
    """``run_trial`` on one LoRA run (the trial's own seeds 0..seeds-1, not the run's seed)."""
    from dora_diag.train.trial import run_trial
    return run_trial(base, lora_run, steps=steps, seeds=seeds, device="cpu")
