"""The "will DoRA help?" verdict: the sign and strength of the ΔD–ΔM coupling of a LoRA run.

The DoRA paper (Fig. 2) finds LoRA's magnitude and direction changes positively correlated
across layers and checkpoints (r = +0.83) while full fine-tuning (−0.62) and DoRA (−0.31)
show a negative slope. The heuristic built on it: after a short LoRA run, r > +0.3 means
LoRA is stuck coupling the two, which DoRA decouples; r < 0 means LoRA already moves like
full fine-tuning and DoRA can add little. It is a heuristic, so every verdict carries n, p
and a confidence interval.
"""

from __future__ import annotations

import math

import pandas as pd

from ..errors import InputError
from .stats import STAT_COLUMNS


def verdict(analysis, min_r: float = 0.3, alpha: float = 0.05, min_points: int = 6) -> list[dict]:
    """One verdict per run of ``analysis``.

    The decision uses the pooled fit (``Analysis.stats`` row "(pooled)": all module types'
    (layer, checkpoint) points after z-scoring ΔD and ΔM within each module type), because
    the rule is about the run as a whole and pooling gives the most points; the per-module
    fits are reported beside it. With the pooled Pearson r, its two-sided p and n:

    - n < ``min_points`` or r undefined (constant ΔD or ΔM)  -> "inconclusive"
    - r > ``min_r`` and p < ``alpha``                         -> "dora_likely_helps"
    - r < 0                                                   -> "marginal"
    - otherwise (0 <= r <= min_r, or r > min_r with p >= alpha) -> "inconclusive"

    The rule is meant for LoRA runs; on DoRA or full fine-tuning runs it is still computed and
    the verdict's ``note`` says what the pattern means there.
    """
    check_thresholds(min_r, alpha, min_points)
    thresholds = {"min_r": min_r, "alpha": alpha, "min_points": min_points}
    stats = analysis.stats("module")
    kinds = _run_kinds(analysis.meta)
    out = []
    for run in analysis.runs:
        rows = stats[stats["run"] == run]
        pooled_row = rows[rows["module"] == "(pooled)"]
        pooled = _stat_dict(pooled_row.iloc[0]) if len(pooled_row) else {**dict.fromkeys(STAT_COLUMNS, math.nan), "n": 0}
        modules = [{"module": r["module"], **_stat_dict(r)} for _, r in rows.iterrows() if r["module"] != "(pooled)"]
        decision, reason = decide(pooled, min_r, alpha, min_points)
        if pooled["n"] == 0 and any(m["n"] > 0 for m in modules):
            reason = "ΔD or ΔM does not vary within any module type (an untrained adapter?), so r is undefined"
        kind = kinds.get(run, "unknown")
        out.append({
            "run": run, "kind": kind, "decision": decision,
            "headline": _headline(decision, kind, pooled, reason), "reason": reason,
            "thresholds": dict(thresholds), "pooled": pooled, "modules": modules, "note": _note(kind),
        })
    return out


def decide(s: dict, min_r: float, alpha: float, min_points: int) -> tuple[str, str]:
    """(decision, reason) for one fit's stats; see ``verdict`` for the rule."""
    n, r, p = s["n"], s["pearson_r"], s["p_value"]
    if n < min_points:
        return "inconclusive", f"too few points: n = {n} < {min_points} (layers × checkpoints); add checkpoints or modules"
    if _nan(r):
        return "inconclusive", "ΔD or ΔM is constant across points, so r is undefined"
    ci = _ci_text(s)
    if r > min_r and p < alpha:
        return "dora_likely_helps", f"r = {r:+.2f} > {min_r:+.2f} with p = {p:.2g} < {alpha:g} (n = {n}{ci})"
    if r < 0:
        return "marginal", f"r = {r:+.2f} < 0 (n = {n}, p = {p:.2g}{ci}): magnitude and direction already move apart"
    if r > min_r:
        return "inconclusive", (f"r = {r:+.2f} > {min_r:+.2f} but p = {p:.2g} ≥ {alpha:g} (n = {n}{ci}): "
                                "the interval is too wide; add checkpoints or modules")
    return "inconclusive", f"r = {r:+.2f} is between 0 and {min_r:+.2f} (n = {n}{ci}): weak coupling"


def _headline(decision: str, kind: str, s: dict, reason: str) -> str:
    if decision == "inconclusive":
        head = f"Inconclusive: {reason}."
        return head if kind in ("lora", "mixed", "unknown") else f"[{kind} run] {head}"
    stat = f"r = {s['pearson_r']:+.2f}, p = {s['p_value']:.2g}, n = {s['n']}"
    if kind in ("lora", "mixed", "unknown"):
        return ("DoRA likely helps: LoRA changes magnitude and direction together "
                f"({stat})." if decision == "dora_likely_helps" else
                f"LoRA already moves like full fine-tuning ({stat}); DoRA gain likely marginal.")
    # The rule's wording is about LoRA; for other runs describe the pattern itself.
    pattern = ("magnitude and direction change together, the LoRA-like pattern" if decision == "dora_likely_helps"
               else "magnitude and direction move apart, the pattern of full fine-tuning and DoRA")
    return f"[{kind} run] {pattern[0].upper()}{pattern[1:]} ({stat})."


def _note(kind: str) -> str:
    if kind == "dora":
        return ("This is a DoRA run: it shows DoRA's own pattern (the paper reports r = −0.31, a negative slope "
                "like full fine-tuning); the rule is meant for LoRA runs.")
    if kind == "full":
        return ("This is a full fine-tuning run (the paper reports r = −0.62); the rule is meant for LoRA runs, "
                "use it on a short LoRA run to decide about DoRA.")
    if kind == "mixed":
        return "The run mixes checkpoint kinds; the rule is meant for LoRA runs."
    return "LoRA in the DoRA paper: r = +0.83. A heuristic: confirm on a short DoRA run before switching."


def _run_kinds(meta: dict) -> dict[str, str]:
    kinds = {}
    for run in meta.get("runs", []):
        seen = {c.get("kind", "unknown") for c in run.get("checkpoints", [])}
        kinds[run["label"]] = seen.pop() if len(seen) == 1 else "mixed"
    return kinds


def _stat_dict(row: pd.Series) -> dict:
    out = {k: float(row[k]) for k in STAT_COLUMNS}
    out["n"] = int(row["n"])
    return out


def _ci_text(s: dict) -> str:
    if _nan(s["ci_low"]):
        return ""
    return f", 95% CI {s['ci_low']:+.2f} to {s['ci_high']:+.2f}"


def _nan(x: float) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def check_thresholds(min_r: float, alpha: float, min_points: int) -> None:
    if not 0 <= min_r < 1:
        raise InputError(f"min_r must be in [0, 1), not {min_r}")
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), not {alpha}")
    if min_points < 4:
        raise InputError(f"min_points must be at least 4 (a confidence interval needs n > 3), not {min_points}")
