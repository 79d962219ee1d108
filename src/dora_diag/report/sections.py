"""HTML fragments of the report (no figures). Every value passes through ``esc``: names, paths
and metadata come from checkpoints and are untrusted."""

from __future__ import annotations

import html

import pandas as pd

from .format import ci_text, fmt, fmt_p, missing

MAX_ROWS = 200
DECISIONS = {"dora_likely_helps": "DoRA likely helps", "marginal": "marginal gain", "inconclusive": "inconclusive"}


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
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def header(meta: dict, generated: str) -> str:
    items = [("base", meta.get("base")), ("tool", f"{meta.get('tool', 'dora-diag')} {meta.get('version', '')}"),
             ("generated", generated), ("axis", _axis(meta.get("axis"))), ("device", meta.get("device")),
             ("elapsed", fmt(meta.get("elapsed_s"), ".1f") + ("" if missing(meta.get("elapsed_s")) else " s")),
             ("read", _bytes(meta.get("bytes_read"))), ("tensors compared", meta.get("tensors_compared")),
             ("fused q/k/v split", "yes" if meta.get("split_fused") else "no")]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    runs = [[r.get("label"), r.get("path"), len(r.get("checkpoints", [])),
             ", ".join(_ckpt_label(c) for c in r.get("checkpoints", [])),
             ", ".join(sorted({str(c.get("kind", "?")) for c in r.get("checkpoints", [])}))]
            for r in meta.get("runs", [])]
    return (f"<header><h1>Weight decomposition analysis</h1>"
            f'<p class="lead">How fine-tuning changed each weight matrix in magnitude (ΔM) and direction (ΔD), '
            f"as in the DoRA paper (Liu et al., ICML 2024), Figure 2.</p><dl class=\"meta\">{dl}</dl>"
            f"<h3>Runs</h3>{table(['label', 'path', 'checkpoints', 'steps', 'kind'], runs, numeric={2}, names={1})}"
            f"</header>")


def _axis(axis) -> str:
    return {"out": "out — per output channel (rows of an (out, in) Linear weight; DoRA/PEFT)",
            "in": "in — per input column (LyCORIS default)"}.get(axis, str(axis))


def _ckpt_label(c: dict) -> str:
    step = c.get("step")
    return f"{c.get('name')}" + (f" (step {step})" if step is not None and not str(c.get("name")).endswith(str(step))
                                 else "")


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


def _stat_line(s) -> str:
    return (f"r = {fmt(s['pearson_r'], '+.2f')}{ci_text(s)}, p = {fmt_p(s['p_value'])}, n = {int(s['n'])}, "
            f"slope = {fmt(s['slope'], '.3g')}, Spearman ρ = {fmt(s['spearman_rho'], '+.2f')}")


def verdict_cards(verdicts: list[dict]) -> str:
    cards = []
    for v in verdicts:
        d = str(v.get("decision", "inconclusive"))
        modules = [[m.get("module"), m.get("n"), fmt(m.get("pearson_r"), "+.2f"), fmt_p(m.get("p_value")),
                    ci_text(m).strip() or "n/a", fmt(m.get("slope"), ".3g")] for m in v.get("modules", [])]
        thresholds = ", ".join(f"{k} = {t}" for k, t in (v.get("thresholds") or {}).items())
        pooled = v.get("pooled") or {}
        cards.append(
            f'<div class="card {esc(d)}"><h3>{esc(v.get("run"))} <span class="muted">({esc(v.get("kind"))} run)</span>'
            f'<span class="badge {esc(d)}">{esc(DECISIONS.get(d, d))}</span></h3>'
            f"<p><strong>{esc(v.get('headline'))}</strong></p><p>{esc(v.get('reason'))}</p>"
            + (f"<p>Pooled fit: {esc(_stat_line(pooled))}</p>" if pooled else "")
            + f'<p class="muted">{esc(v.get("note"))} Thresholds: {esc(thresholds)}.</p>'
            f"<details><summary>per module type</summary>"
            f"{table(['module', 'n', 'r', 'p', '95% CI', 'slope'], modules, numeric={1, 2, 3, 4, 5})}</details></div>")
    return f'<div class="cards">{"".join(cards)}</div>'


def correlation_cards(stats: pd.DataFrame) -> str:
    cards = []
    for run, g in stats.groupby("run", sort=False):
        pooled = g[g["module"] == "(pooled)"]
        line = _stat_line(pooled.iloc[0]) if len(pooled) else "no points"
        r = pooled.iloc[0]["pearson_r"] if len(pooled) else float("nan")
        sign = ("n/a" if missing(r) else "positive: magnitude and direction change together (LoRA-like)" if r > 0
                else "negative: magnitude and direction move apart (full fine-tuning / DoRA-like)")
        cards.append(f'<div class="card"><h3>{esc(run)}</h3><p>Pooled over module types: {esc(line)}</p>'
                     f"<p>Sign: {esc(sign)}.</p></div>")
    return f'<div class="cards">{"".join(cards)}</div>'


def stats_table(stats: pd.DataFrame) -> str:
    rows = [[s["run"], s["module"], int(s["n"]), fmt(s["pearson_r"], "+.3f"), fmt_p(s["p_value"]),
             ci_text(s).strip() or "n/a", fmt(s["spearman_rho"], "+.3f"), fmt(s["slope"], ".3g"),
             fmt(s["intercept"], ".3g")] for _, s in stats.iterrows()]
    return table(["run", "module", "n", "Pearson r", "p", "95% CI", "Spearman ρ", "slope", "intercept"], rows,
                 numeric={2, 3, 4, 5, 6, 7, 8})


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
<li><strong>ΔD</strong> = mean over channels of 1 − cos(w, w₀) — how much the channels turned; fine-tuning
gives tiny values (1e-9 … 1e-3), hence the scientific axes.</li>
</ul>
<p><strong>Figure 2</strong> plots, per module type, one point per layer and checkpoint (x = ΔD, y = ΔM)
and fits ΔM on ΔD. The DoRA paper found a <em>negative</em> correlation for full fine-tuning (r = −0.62)
and DoRA (r = −0.31) but a <em>positive</em> one for LoRA (r = +0.83): LoRA tends to change magnitude and
direction together. A LoRA run with a clearly positive r is the case where DoRA is expected to help; this
is a heuristic, so read it with n, p and the 95% confidence interval (Fisher z). The pooled fit
z-scores ΔD and ΔM within each module type before pooling. Embeddings, the LM head (no layer index) and
tensors with non-finite values are listed in the tables but left out of the fits.</p>
</div>
"""
