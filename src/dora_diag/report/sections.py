"""HTML fragments of the report (no figures). Every value passes through ``esc``: names, paths
and metadata come from checkpoints and are untrusted."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .format import ci_text, fmt, fmt_p, fmt_scaled, missing, stat

if TYPE_CHECKING:
    from ..records import CheckpointInfo, Meta

MAX_ROWS = 200


def esc(value) -> str:
    return html.escape("" if value is None or value is pd.NA else str(value), quote=True)


def table(headers: list[str], rows: list[list], numeric: set[int] = frozenset(), names: set[int] = frozenset(),
          total: int | None = None) -> str:
    """An escaped HTML table; ``total`` > len(rows) adds a "more rows" note."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if i in numeric else "name" if i in names else ""}">{esc(v)}</td>'
                         for i, v in enumerate(r)) + "</tr>" for r in rows)
    more = "" if total is None or total <= len(rows) else (
        f'<p class="muted">… and {total - len(rows)} more (all of them are in the --json/--csv outputs).</p>')
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{more}'


TEMPORARY = "(a temporary directory, deleted after the run)"


def header(meta: Meta, generated: str) -> str:
    """Inputs and run details. Paths inside ``meta.temporary_dirs`` (the demo's runs, deleted
    after it) read as such: a path that no longer exists would only mislead."""
    temporary = [Path(d) for d in meta.temporary_dirs]

    def path(p: str) -> str:
        return TEMPORARY if any(Path(p).is_relative_to(d) for d in temporary) else p

    items = [("base", path(meta.base)), ("tool", f"{meta.tool} {meta.version}"),
             ("generated", generated), ("axis", _axis(meta.axis)), ("device", meta.device),
             ("elapsed", fmt(meta.elapsed_s, ".1f") + ("" if missing(meta.elapsed_s) else " s")),
             ("read", _bytes(meta.bytes_read)), ("tensors compared", meta.tensors_compared),
             ("fused q/k/v split", "yes" if meta.split_fused else "no")]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    runs = [[r.label, r.method, path(r.path), len(r.checkpoints), ", ".join(_ckpt_label(c) for c in r.checkpoints),
             ", ".join(sorted({c.kind for c in r.checkpoints}))]
            for r in meta.runs]
    return (f"<header><h1>Weight decomposition analysis</h1>"
            f'<p class="lead">How fine-tuning changed each weight matrix in magnitude (ΔM) and direction (ΔD), '
            f"as in the DoRA paper (Liu et al., ICML 2024), Figure 2.</p><dl class=\"meta\">{dl}</dl>"
            f"<h3>Runs</h3>{table(['label', 'method', 'path', 'checkpoints', 'steps', 'kind'], runs, numeric={3}, names={2})}"
            f"</header>")


def _axis(axis) -> str:
    return {"out": "out — per output channel (rows of an (out, in) Linear weight; DoRA/PEFT)",
            "in": "in — per input column (LyCORIS default)"}.get(axis, str(axis))


def _ckpt_label(c: CheckpointInfo) -> str:
    return c.name + (f" (step {c.step})" if c.step is not None and not c.name.endswith(str(c.step)) else "")


def _bytes(n) -> str:
    if missing(n):
        return "n/a"
    n = float(n)
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024:
            break
    return f"{n:.1f} {unit}"


def stats_table(stats: pd.DataFrame, scales: dict | None = None) -> str:
    """The fits, one row per run × module type. ``scales``: (run, module) -> typical |ΔM| there,
    the size below which an intercept is rounding noise (pooled rows are z-scores: scale 1)."""
    scales = scales or {}
    rows = [[s["run"], s["module"], int(s["n"]), _int(s.get("units")), fmt(s["pearson_r"], "+.3f"),
             ci_text(s).strip() or "n/a", fmt_p(stat(s, "p")), fmt(s["spearman_rho"], "+.3f"), fmt(s["slope"], ".3g"),
             fmt_scaled(s["intercept"], scales.get((s["run"], s["module"]), 1.0))] for _, s in stats.iterrows()]
    return table(["run", "module", "n", "layers", "Pearson r", "95% CI", "p", "Spearman ρ", "slope", "intercept"],
                 rows, numeric={2, 3, 4, 5, 6, 7, 8, 9})


def _int(x) -> str:
    return "n/a" if missing(x) else str(int(x))


def eval_table(evals: list[dict]) -> str:
    """The runs' final eval metrics (``trajectory.final_evals``): one row per run, one column per metric."""
    metrics = list(dict.fromkeys(k for e in evals for k in e if k != "run"))
    if not metrics:
        return ""
    rows = [[e["run"], *(_eval_cell(e.get(m)) for m in metrics)] for e in evals]
    return ("<p>Final evaluation (the last logged value of each metric, at its step):</p>"
            + table(["run", *(m.removeprefix("eval_") for m in metrics)], rows, numeric=set(range(1, len(metrics) + 1))))


def _eval_cell(value) -> str:
    return "n/a" if value is None else f"{fmt(value[1], '.4g')} (step {value[0]})"


TENSOR_HEADERS = ["run", "checkpoint", "tensor", "layer", "module", "ΔD", "ΔM", "rel ΔM", "zero rows", "flags"]


def tensor_rows(df: pd.DataFrame) -> list[list]:
    return [[r["run"], r["checkpoint"], r["tensor"], "" if r["layer"] is pd.NA else r["layer"], r["module"],
             fmt(r["delta_d"], ".3e"), fmt(r["delta_m"], ".3e"), fmt(r["rel_delta_m"], ".3e"), r["zero_rows"],
             r["flags"]] for _, r in df.iterrows()]


def tensor_table(df: pd.DataFrame) -> str:
    if df.empty:
        return '<p class="muted">none</p>'
    shown = df.head(MAX_ROWS)
    return table(TENSOR_HEADERS, tensor_rows(shown), numeric={3, 5, 6, 7, 8}, names={2}, total=len(df))


def records_table(records: list[dict], keys: list[str]) -> str:
    if not records:
        return '<p class="muted">none</p>'
    rows = [[r.get(k, "") for k in keys] for r in records[:MAX_ROWS]]
    return table(keys, rows, names={keys.index("tensor")} if "tensor" in keys else set(), total=len(records))


HOW_TO_READ = """
<div class="note">
<p>Each weight matrix W (PyTorch <code>nn.Linear</code> layout, out × in) is split per channel into a
magnitude m = ‖w‖ and a direction w / ‖w‖, where w is one row (axis "out", the DoRA/PEFT convention) or
one column (axis "in"). Against the base checkpoint W₀:</p>
<ul>
<li><strong>ΔM</strong> = mean over channels of |‖w‖ − ‖w₀‖| — how much the channel norms moved;
<strong>rel ΔM</strong> divides each by ‖w₀‖.</li>
<li><strong>ΔD</strong> = mean over channels of 1 − cos(w, w₀) — how much the channels turned, from 0
(no turn) up to 2; small fine-tunes give values far below 1, down to 1e-9, and long or high-learning-rate
ones reach 0.1–1: each axis is labelled in plain decimals, or in powers of ten below 0.001.</li>
</ul>
<p><strong>Figure 2</strong> plots, per module type, one point per layer and checkpoint (x = ΔD, y = ΔM;
colour = layer, size = step) and fits ΔM on ΔD. The DoRA paper found a <em>negative</em> correlation for
full fine-tuning (r = −0.62) and DoRA (r = −0.31) but a <em>positive</em> one for LoRA (r = +0.83): LoRA
tends to change magnitude and direction together. A LoRA run with a clearly positive r is the case where
DoRA is expected to help; this is a heuristic, so read it with n, p and the 95% confidence interval. The
points of one layer at successive checkpoints are not independent, and both ΔD and ΔM grow with training
and vary with depth, which alone makes r positive: the CI is a bootstrap over layers, p a permutation of
layer labels, and the within-checkpoint r (each checkpoint's mean removed) and the partial r (a linear
depth trend removed as well; what the verdict decides on) show what is left without the shared trends. The pooled fit z-scores ΔD and ΔM within each module type before pooling. Embeddings, the LM head (no layer index) and
tensors with non-finite values are listed in the tables but left out of the fits.</p>
</div>
"""
