"""The report's verdict cards (``check``) and coupling cards (``compare``): each states the run's
method, its layer-level statistics and, for verdicts, the decision, what decided it, the relative
evidence and the trial. Every value passes through ``esc``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from .format import fmt, fmt_p, missing
from .sections import esc, table

if TYPE_CHECKING:
    from ..records import Verdict

DECISIONS = {"dora_likely_helps": "DoRA may help", "marginal": "gain likely marginal",
             "inconclusive": "inconclusive", "not_applicable": "reference pattern"}
BY = {"heuristic": " (heuristic)", "trial": " (trial)"}
STATS = (("pearson", "paper's Pearson r"), ("within_checkpoint", "within-checkpoint r"), ("partial", "partial r"))
STAT_HEADERS = ["module", "n", "layers"] + [h for _, label in STATS for h in (label, "95% CI", "p")] + ["naive p"]


def _ci(s: dict, kind: str) -> str:
    lo, hi = s.get(f"{kind}_ci_low"), s.get(f"{kind}_ci_high")
    return "n/a" if missing(lo) or missing(hi) else f"[{float(lo):+.2f}, {float(hi):+.2f}]"


def _stat_row(label: str, s: dict) -> list:
    row = [label, s.get("n"), s.get("units")]
    for kind, _ in STATS:
        row += [fmt(s.get(f"{kind}_r"), "+.2f"), _ci(s, kind), fmt_p(s.get(f"{kind}_p"))]
    return row + [fmt_p(s.get("naive_p"))]


def stats_block(pooled: dict, modules: Sequence[dict]) -> str:
    """Pooled and per-module statistics as one table: CIs resample layers, p permutes them."""
    rows = [_stat_row("(pooled)", pooled)] + [_stat_row(m["module"], m) for m in modules]
    return table(STAT_HEADERS, rows, numeric=set(range(1, len(STAT_HEADERS))))


def _relative(relative: Sequence[dict]) -> str:
    if not relative:
        return ""
    rows = [[r["versus"], r["method"], fmt(r["value"], "+.2f"), fmt(r["reference"], "+.2f"),
             fmt(r["difference"], "+.2f"), f"[{fmt(r['ci_low'], '+.2f')}, {fmt(r['ci_high'], '+.2f')}]", r["units"]]
            for r in relative]
    return ("<p>Against the other runs on this base (paired layer bootstrap of the partial r):</p>"
            + table(["versus", "method", "this run", "that run", "difference", "95% CI", "layers"], rows,
                    numeric={2, 3, 4, 5, 6}))


def _trial(trial: dict | None) -> str:
    if not trial:
        return ""
    rows = [[r.get("method"), r.get("seed"), r.get("steps"), fmt(r.get("eval_loss"), ".4g"),
             fmt(r.get("eval_accuracy"), ".3f"), fmt(r.get("step_time_s"), ".3g")] for r in trial.get("runs", [])]
    return (f"<p>Matched trial: {esc(trial.get('summary'))}</p>"
            + table(["method", "seed", "steps", "eval loss", "eval accuracy", "step time (s)"], rows,
                    numeric={1, 2, 3, 4, 5}))


def verdict_cards(verdicts: Sequence[Verdict]) -> str:
    cards = []
    for v in verdicts:
        d = v.decision
        th = ", ".join(f"{k} = {t}" for k, t in v.thresholds.items())
        cards.append(
            f'<div class="card {esc(d)}"><h3>{esc(v.run)} <span class="muted">({esc(v.method)})</span> '
            f'<span class="badge {esc(d)}">{esc(DECISIONS.get(d, d) + BY.get(v.decided_by, ""))}</span></h3>'
            f"<p><strong>{esc(v.headline)}</strong></p>"
            f"<p>Why: {esc(v.reason)}. Decided by: {esc(v.decided_by)}.</p>"
            + _trial(v.trial) + _relative(v.relative)
            + f'<p class="muted">{esc(v.note)} Decision statistic: {esc(v.statistic_why)}. '
            f'Thresholds: {esc(th)}. CIs: {esc(v.ci_method)}; '
            f'p: {esc(v.p_method)}. Naive p treats every point as independent and is shown for comparison only.</p>'
            f"<details><summary>statistics per module type</summary>"
            f"{stats_block(v.pooled, v.modules)}</details></div>")
    return f'<div class="cards">{"".join(cards)}</div>'


def coupling_cards(stats: pd.DataFrame) -> str:
    """One card per run of a comparison (no decision): its pooled statistics."""
    cards = []
    for run, g in stats.groupby("run", sort=False):
        pooled = g[g["module"] == "(pooled)"]
        if not len(pooled):
            continue
        s = pooled.iloc[0].to_dict()
        cards.append(f'<div class="card"><h3>{esc(run)} <span class="muted">({esc(s.get("method"))})</span></h3>'
                     f"<p>Pooled over module types, {esc(s.get('units'))} layers × {esc(s.get('checkpoints'))} "
                     f"checkpoints:</p>{stats_block(s, [])}</div>")
    return f'<div class="cards">{"".join(cards)}</div>'
