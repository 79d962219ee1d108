"""The "will DoRA help?" verdict for each run, from its own numbers.

The DoRA paper (Fig. 2) reports full fine-tuning's ΔD–ΔM correlation negative (−0.62), LoRA's
positive (+0.83) and DoRA's negative (−0.31); the heuristic built on it: a short LoRA run whose
magnitude and direction changes are positively coupled is one DoRA (which learns them apart)
should improve. Two facts shape the rule here:

- In real runs ΔD and ΔM both grow with the training step and with depth, for every method,
  which alone makes the paper's Pearson r positive. The decision therefore uses ``partial_r``
  (the coupling left after removing per-checkpoint means and a depth trend per module type);
  the paper's ``pearson_r`` is reported beside it, for comparison with its figure.
- Points of one layer (its checkpoints and module types) are not independent: CIs and p-values
  are layer-level (``coupling``), and fewer than ``min_units`` layers is too little data.

Only LoRA-family runs (``io.method.LORA_FAMILY``) get a decision; a full fine-tuning or DoRA
run is described as the pattern it is (``not_applicable``). A matched LoRA-vs-DoRA trial, when
given, is direct evidence and decides whenever its interval excludes zero.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io.method import LORA_FAMILY
from ..methods import METHODS
from ..options import CHECK_ALPHA, CHECK_MIN_R, CHECK_MIN_UNITS
from ..records import Verdict
from . import student_t
from .relative import relative_evidence
from .stats import POOLED
from .table import ZERO_CHANGE

STATISTIC = "partial_r"
STATISTIC_WHY = ("partial r: the ΔD–ΔM correlation after removing each checkpoint's mean and a linear depth "
                 "trend per module type, because ΔD and ΔM grow with step and depth under every method")
METHOD_NAMES = {"ft": "full fine-tuning", "lora": "LoRA", "rslora": "rsLoRA", "dora": "DoRA", "dvora": "DVoRA",
                "dora-magnitude-only": "DoRA (magnitude only on some modules)",
                "dora-frozen-magnitude": "DoRA with a frozen magnitude", "unknown": "an unknown method"}
UNCHANGED_HEADLINE = "This adapter has not changed the model: every adapted tensor equals the base."
STAT_KEYS = ("n", "units", "checkpoints", "pearson_r", "pearson_ci_low", "pearson_ci_high", "pearson_p",
             "within_checkpoint_r", "within_checkpoint_ci_low", "within_checkpoint_ci_high", "within_checkpoint_p",
             "partial_r", "partial_ci_low", "partial_ci_high", "partial_p", "naive_p", "naive_ci_low",
             "naive_ci_high", "spearman_rho", "slope", "intercept")


def verdict(analysis, min_r: float = CHECK_MIN_R, alpha: float = CHECK_ALPHA, min_units: int = CHECK_MIN_UNITS,
            trials: dict[str, dict] | None = None) -> list[Verdict]:
    """One verdict per run of ``analysis``; ``trials[run]`` is a matched trial block
    (``train.trial.run_trial``) for that run, if one was run."""
    check_thresholds(min_r, alpha, min_units)
    th = {"min_r": min_r, "alpha": alpha, "min_units": min_units}
    stats = analysis.stats("module")
    methods = analysis.methods
    out = []
    for run in analysis.runs:
        rows = stats[stats["run"] == run]
        pooled = _pooled(rows)
        modules = [{"module": r["module"], **stat_dict(r)} for _, r in rows.iterrows() if r["module"] != POOLED]
        method = methods.get(run, "unknown")
        relative = relative_evidence(analysis, run) if method in LORA_FAMILY else []
        trial = (trials or {}).get(run)
        decision = decide(pooled, method, th, relative, trial, unchanged=_unchanged(analysis.table, run))
        out.append(Verdict(run, method, **decision, statistic=STATISTIC, statistic_why=STATISTIC_WHY,
                           thresholds=dict(th), pooled=pooled, modules=tuple(modules), relative=tuple(relative),
                           trial=trial, ci_method=_first(rows, "ci_method"), p_method=_first(rows, "p_method")))
    return out


def _unchanged(table: pd.DataFrame, run: str) -> bool:
    """Every adapted tensor of every checkpoint of ``run`` is exactly the base (``table.ZERO_CHANGE``)."""
    flags = table.loc[(table["run"] == run) & (table["group"].fillna("") == ""), "flags"].fillna("")
    return len(flags) > 0 and all(ZERO_CHANGE in str(f).split(";") for f in flags)


def _pooled(rows: pd.DataFrame) -> dict:
    p = rows[rows["module"] == POOLED]
    return stat_dict(p.iloc[0]) if len(p) else {**dict.fromkeys(STAT_KEYS, math.nan), "n": 0, "units": 0,
                                                "checkpoints": 0}


def _first(rows: pd.DataFrame, col: str) -> str | None:
    return str(rows[col].iloc[0]) if len(rows) else None


def stat_dict(row: pd.Series) -> dict:
    out = {k: float(row[k]) for k in STAT_KEYS}
    for k in ("n", "units", "checkpoints"):
        out[k] = int(row[k])
    return out


# ---- the decision and its words ----------------------------------------------------------------
def decide(s: dict, method: str, th: dict, relative: list[dict] = (), trial: dict | None = None,
           unchanged: bool = False) -> dict:
    """{"decision", "decided_by", "headline", "reason", "note"} for one run's pooled stats ``s``;
    ``unchanged``: every adapted tensor of the run equals the base, so there is nothing to judge."""
    if unchanged:
        return {"decision": "inconclusive", "decided_by": "none", "headline": UNCHANGED_HEADLINE,
                "reason": f"every adapted tensor is flagged '{ZERO_CHANGE}': ΔM = ΔD = 0 exactly (B = 0, or DoRA "
                          "magnitudes equal to the base norms)",
                "note": "Check that training updated the adapter and that the trained weights were saved."}
    if method not in LORA_FAMILY:
        return {"decision": "not_applicable", "decided_by": "none", "headline": describe_pattern(s, method, th),
                "reason": f"the decision is made for LoRA-family runs only; this is a {METHOD_NAMES[method]} run",
                "note": _pattern_note(method)}
    decision, reason = heuristic(s, th)
    decided_by = "heuristic" if decision != "inconclusive" else "none"
    headline = _heuristic_headline(decision, s, reason)
    trial_text = ""
    if trial is not None:
        t_decision, trial_text = judge_trial(trial, th["alpha"])
        if t_decision != "inconclusive":
            decision, decided_by = t_decision, "trial"
            headline = _trial_headline(t_decision, trial_text)
        else:
            headline = f"{headline.removesuffix('.')}; the matched trial does not decide it: {trial_text}."
    reason = "; ".join(x for x in (reason, _relative_text(relative), trial_text and f"trial: {trial_text}") if x)
    return {"decision": decision, "decided_by": decided_by, "headline": headline, "reason": reason,
            "note": _lora_note(decided_by, trial is not None)}


def heuristic(s: dict, th: dict) -> tuple[str, str]:
    """(decision, reason) of the coupling heuristic on the pooled stats ``s``."""
    units, r, p = s["units"], s[STATISTIC], s["partial_p"]
    if units < th["min_units"]:
        return "inconclusive", (f"too few layers: {units} independent layers < {th['min_units']} (the checkpoints and "
                                "module types of one layer are not independent samples)")
    if _nan(r):
        return "inconclusive", "ΔD or ΔM does not vary once the step and depth trends are removed, so r is undefined"
    stat = coupling_text(s)
    if r > th["min_r"] and p < th["alpha"]:
        return "dora_likely_helps", f"{stat}: above {th['min_r']:+.2f} with p < {th['alpha']:g}"
    if r < 0 and p < th["alpha"]:
        return "marginal", f"{stat}: negative with p < {th['alpha']:g}, magnitude and direction already move apart"
    if p >= th["alpha"]:
        return "inconclusive", f"{stat}: not distinguishable from no coupling at p < {th['alpha']:g}"
    return "inconclusive", f"{stat}: positive but not above {th['min_r']:+.2f}, a weak coupling"


def coupling_text(s: dict) -> str:
    """``partial r = +0.52 (95% CI +0.21 to +0.75, p = 0.004, 12 layers)``"""
    return (f"partial r = {_f(s['partial_r'])} ({_ci(s, 'partial')}p = {_p(s['partial_p'])}, "
            f"{s['units']} layers; the paper's Pearson r = {_f(s['pearson_r'])})")


def describe_pattern(s: dict, method: str, th: dict) -> str:
    """What a non-LoRA run's numbers show, without advice."""
    name = METHOD_NAMES.get(method, method)
    r = s[STATISTIC]
    if _nan(r):
        return f"{name[0].upper()}{name[1:]} run: the detrended coupling is undefined ({s['units']} layers)."
    if s["units"] < th["min_units"]:
        shape = (f"too few layers to tell a coupling from the step and depth trends ({s['units']} independent "
                 f"layers < {th['min_units']})")
    elif _nan(s["partial_p"]) or s["partial_p"] >= th["alpha"] or r == 0:
        shape = "no clear coupling of magnitude and direction beyond the step and depth trends"
    elif r > 0:
        shape = "magnitude and direction change together beyond the step and depth trends"
    else:
        shape = "magnitude and direction move apart beyond the step and depth trends"
    return f"{name[0].upper()}{name[1:]} run: {shape}; {coupling_text(s)}."


def _heuristic_headline(decision: str, s: dict, reason: str) -> str:
    if decision == "dora_likely_helps":
        return (f"The coupling heuristic says DoRA may help (unproven, see the note): LoRA couples magnitude and "
                f"direction; {coupling_text(s)}.")
    if decision == "marginal":
        return (f"The coupling heuristic says DoRA's gain is likely marginal (unproven, see the note): LoRA already "
                f"moves them apart; {coupling_text(s)}.")
    return f"Inconclusive: {reason}."


def _trial_headline(decision: str, text: str) -> str:
    return (f"DoRA helps in the matched trial: {text}." if decision == "dora_likely_helps"
            else f"DoRA did not help in the matched trial: {text}.")


def _pattern_note(method: str) -> str:
    if method == "ft":
        return ("Full fine-tuning is the reference pattern the heuristic compares LoRA with "
                "(the paper reports r = −0.62 on VL-BART).")
    if method in METHODS and METHODS[method].magnitude:
        return "This is DoRA's own pattern (the paper reports r = −0.31 for DoRA on VL-BART)."
    return "The method is unknown: nothing is decided about it."


def _lora_note(decided_by: str, had_trial: bool) -> str:
    if decided_by == "trial":
        return "Decided by the matched trial (direct evidence); the coupling heuristic is shown for comparison."
    record = ("The coupling heuristic (from the paper's Figure 2) is not shown to predict DoRA's gain: in "
              "reports/verdict-calibration.md it said 'DoRA may help' on a real pretrained model whose DoRA runs "
              "then had a higher eval loss than LoRA's.")
    if had_trial:
        return ("The matched trial's interval includes zero: more seeds or steps (--trial-seeds, --trial-steps) "
                f"would narrow it. {record}")
    return f"{record} `dora-diag check --trial` measures DoRA against LoRA directly."


def _relative_text(relative: list[dict]) -> str:
    parts = []
    for rel in relative:
        d, lo, hi = rel["difference"], rel["ci_low"], rel["ci_high"]
        if _nan(d):
            continue
        if not _nan(lo) and lo > 0:
            how = "more than"
        elif not _nan(hi) and hi < 0:
            how = "less than"
        else:
            how = "not distinguishably from"
        parts.append(f"LoRA couples {how} {rel['versus']} ({METHOD_NAMES.get(rel['method'], rel['method'])}): "
                     f"difference in partial r {_f(d)} (95% CI {_f(lo)} to {_f(hi)}, paired over "
                     f"{rel['units']} layers)")
    return "; ".join(parts)


def judge_trial(trial: dict, alpha: float) -> tuple[str, str]:
    """(decision, text) from a trial's DoRA − LoRA eval-loss differences per seed: a t interval
    at level 1 − alpha over seeds; it decides only when it excludes zero."""
    diffs = np.asarray(trial["difference"]["per_seed"], dtype=np.float64)
    k = len(diffs)
    mean = float(diffs.mean()) if k else math.nan
    if k < 2 or not np.isfinite(diffs).all():
        return "inconclusive", f"eval loss DoRA − LoRA = {_g(mean)} from {k} seed(s), too few for an interval"
    sd = float(diffs.std(ddof=1))
    half = student_t.quantile(k - 1, 1 - alpha / 2) * sd / math.sqrt(k)
    lo, hi = mean - half, mean + half
    text = (f"eval loss DoRA − LoRA = {_g(mean)} ({(1 - alpha):.0%} CI {_g(lo)} to {_g(hi)}, sd {sd:.3g} over "
            f"{k} seeds, {trial['settings'].get('steps', '?')} steps each)")
    if hi < 0:
        return "dora_likely_helps", text
    if lo > 0:
        return "marginal", text
    return "inconclusive", text + ", within seed noise"


def _f(x: float) -> str:
    return "n/a" if _nan(x) else f"{x:+.2f}"


def _g(x: float) -> str:
    return "n/a" if _nan(x) else f"{x:+.3g}"


def _p(x: float) -> str:
    return "n/a" if _nan(x) else f"{x:.2g}"


def _ci(s: dict, kind: str) -> str:
    lo, hi = s[f"{kind}_ci_low"], s[f"{kind}_ci_high"]
    return "" if _nan(lo) else f"95% CI {_f(lo)} to {_f(hi)}, "


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def check_thresholds(min_r: float, alpha: float, min_units: int) -> None:
    """Raise InputError for thresholds the rule cannot use (argument names as in ``verdict``)."""
    if not 0 <= min_r < 1:
        raise InputError(f"min_r must be in [0, 1), not {min_r}")
    if not 0 < alpha < 1:
        raise InputError(f"the significance level alpha must be in (0, 1), not {alpha}")
    if min_units < 3:
        raise InputError(f"min_units must be at least 3 (a depth trend needs three layers), not {min_units}")
