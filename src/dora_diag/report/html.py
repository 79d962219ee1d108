"""The self-contained HTML report (plotly.js inlined once, figures as JSON) and the Jupyter summary."""

from __future__ import annotations

import datetime as dt
from importlib.resources import files
from string import Template

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs, get_plotlyjs_version

from . import figures as F
from . import sections as S
from . import verdicts as V

ASSETS = files("dora_diag.report") / "assets"
# plotly.js's cartesian bundle (npm plotly.js-cartesian-dist-min, MIT, see plotly-LICENSE.txt)
# has every trace type the report draws at a third of the full bundle's 4.8 MB, which the
# browser spends most of its first seconds parsing. Used when plotly.py's own plotly.js has
# the same major version, so the figure JSON plotly.py writes matches it.
CARTESIAN_BUNDLE = ("plotly-cartesian-4.1.1.min.js", "4")
TOP_PER_RUN = 15
# JSON inside <script> must not be able to close the tag or open an HTML comment.
SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                             "\u2029": "\\u2029"})


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def plotly_js() -> str:
    name, major = CARTESIAN_BUNDLE
    return _asset(name) if get_plotlyjs_version().split(".")[0] == major else get_plotlyjs()


def script_json(fig) -> str:
    return pio.to_json(fig, validate=False, pretty=False, remove_uids=True).translate(SCRIPT_SAFE)


class _Figures:
    """Collects figures; each becomes a placeholder div plus a JSON <script> block."""

    def __init__(self) -> None:
        self.blocks: list[str] = []

    def add(self, fig) -> str:
        """The placeholder keeps the figure's height before it is drawn, so that a #section link
        lands on its heading instead of being pushed down as the figures above it appear."""
        fid = f"fig-{len(self.blocks)}"
        self.blocks.append(f'<script type="application/json" id="{fid}">{script_json(fig)}</script>')
        return f'<div class="figure" data-fig="{fid}" style="height: {int(fig.layout.height or 450)}px"></div>'


def render_report(analysis) -> str:
    figs = _Figures()
    meta = analysis.meta
    stats = F.in_report_order(analysis, analysis.stats("module"))
    runs = F.run_labels(analysis)
    body = [S.header(meta, dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))]
    if analysis.verdicts is not None:
        body += ["<h2>Will DoRA help?</h2>", V.verdict_cards(analysis.verdicts)]
    else:
        body += ["<h2>Coupling of ΔM and ΔD per run</h2>", V.coupling_cards(stats)]
    body += ["<h2>How to read this</h2>", S.HOW_TO_READ]
    body += _figure_sections(F.report_figures(analysis), figs, S.stats_table(stats, F.delta_m_scales(analysis)),
                             F.final_evals(analysis))
    body += _tables(analysis, runs)
    body.insert(1, _nav(body))
    return Template(_asset("report.html")).substitute(
        generator=S.esc(f"{meta.tool} {meta.version}"),
        title=S.esc(f"dora-diag report: {', '.join(runs)}"), css=_asset("report.css"), body="\n".join(body),
        plotly=plotly_js(), figure_data="\n".join(figs.blocks), render_js=_asset("render.js"))


FIGURE_2_NOTE = ('<p class="muted">One panel per run, each with its own axes (read values across panels by '
                 "their ticks; <code>shared_axes=True</code> puts them on one scale); colour = layer, marker size = "
                 "step (the buttons swap them); red line: OLS fit of ΔM on ΔD; hover a point for the tensor.</p>")


def _figure_sections(figures: dict, figs: _Figures, stats_table: str, evals: list[dict]) -> list[str]:
    def add(kind: str) -> list[str]:
        return [figs.add(fig) for _, fig in figures.get(kind, [])]

    body = ["<h2>Figure 2: magnitude against direction change</h2>", FIGURE_2_NOTE,
            *(add("scatter") or ['<p class="muted">no layer tensors</p>']),
            "<h3>Fits per run and module type</h3>", stats_table]
    if "profile" in figures:
        body += ["<h2>Per-layer profiles (last checkpoint)</h2>", *add("profile"),
                 "<h2>Heatmaps: layer × module (last checkpoint)</h2>",
                 '<p class="muted">One colour scale per metric, the same for every run and checkpoint: '
                 "equal colours are equal values.</p>", *add("heatmap"),
                 "<h2>Trajectories across checkpoints</h2>", *add("trajectory")]
    if "training" in figures:
        body += ["<h2>Training log</h2>", S.eval_table(evals), *add("training")]
    return body


def _nav(parts: list[str]) -> str:
    """Numbers the report's own <h2> headings (constant text, no checkpoint data) and links them."""
    links = []
    for i, part in enumerate(parts):
        if part.startswith("<h2>") and part.endswith("</h2>"):
            title = part[4:-5]
            parts[i] = f'<h2 id="s{i}">{title}</h2>'
            links.append(f'<a href="#s{i}">{title.split(" (")[0].split(":")[0]}</a>')
    return f'<nav class="toc">{" · ".join(links)}</nav>'


def _tables(analysis, runs: list[str]) -> list[str]:
    t = analysis.table
    last = [t[(t["run"] == r) & (t["checkpoint"] == F.checkpoints(analysis, r)[-1])]
            .sort_values("delta_d", ascending=False, na_position="last").head(TOP_PER_RUN)
            for r in runs if F.checkpoints(analysis, r)]
    top = pd.concat(last) if last else t.iloc[0:0]
    flagged = t[t["flags"] != ""]
    meta = analysis.meta
    return ["<h2>Most-changed tensors (largest ΔD at each run's last checkpoint)</h2>", S.tensor_table(top),
            f"<h2>Flagged tensors ({len(flagged)})</h2>", S.tensor_table(flagged),
            f"<h2>Skipped tensors ({len(meta.skipped)})</h2>",
            S.records_table(meta.skipped, ["tensor", "reason", "run", "checkpoint"]),
            f"<h2>Unmatched tensors ({len(meta.unmatched)})</h2>",
            S.records_table(meta.unmatched, ["run", "checkpoint", "tensor", "side"])]


def render_summary(analysis) -> str:
    """Compact HTML for Jupyter: inputs, each verdict's headline (after ``check``) and the per-run,
    per-module correlations (no plotly.js)."""
    meta = analysis.meta
    runs = ", ".join(f"{r.label} ({len(r.checkpoints)} checkpoints)" for r in meta.runs)
    stats = F.in_report_order(analysis, analysis.stats("module"))
    return (f'<div class="dora-diag-summary"><p><strong>dora-diag analysis</strong>: base {S.esc(meta.base)}; '
            f"runs {S.esc(runs)}; axis {S.esc(meta.axis)}; "
            f"{S.esc(meta.tensors_compared)} tensors compared.</p>{_verdict_lines(analysis.verdicts)}"
            f"{S.stats_table(stats, F.delta_m_scales(analysis))}"
            f"<p><code>.figure(kind, ...)</code> kinds: {S.esc(', '.join(sorted(F.FIGURES)))}; "
            f"<code>.to_html(path)</code> writes the full report.</p></div>")


def _verdict_lines(verdicts) -> str:
    """Each verdict's headline (``Analysis.verdicts``; none before ``check``)."""
    if not verdicts:
        return ""
    items = "".join(f"<li><strong>{S.esc(v.run)}</strong>: {S.esc(v.headline)}</li>" for v in verdicts)
    return f"<p><strong>Will DoRA help?</strong></p><ul>{items}</ul>"
