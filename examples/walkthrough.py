"""A notebook-style tour of the Python API (run it as a script, or cell by cell).

    python examples/walkthrough.py [workdir]

It writes the synthetic sample from make_sample_pair.py, then compares, inspects and plots.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import dora_diag
from make_sample_pair import main as make_sample

work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="dora-diag-"))
make_sample(work)

# %% Compare two labelled runs (each a directory of checkpoint-N folders) with the base.
a = dora_diag.compare(work / "base", f"FT={work / 'ft'}", f"LoRA={work / 'lora'}")
print(a)

# %% The per-tensor table: one row per tensor per checkpoint.
print(a.table[["run", "step", "layer", "module", "delta_m", "delta_d"]].head(10).to_string())

# %% Which modules moved most in direction, per run, at the last checkpoint?
last = a.table[a.table["step"] == a.table["step"].max()]
print(last.groupby(["run", "module"])["delta_d"].mean().unstack(0).sort_values("FT", ascending=False))

# %% Figure 2 statistics: Pearson r of ΔD vs ΔM per module type, and pooled.
print(a.stats("module")[["run", "module", "n", "units", "pearson_r", "partial_r", "partial_ci_low", "partial_ci_high",
                          "partial_p", "slope"]])

# %% Figures are plotly objects: show them in a notebook, or save them.
fig = a.figure("scatter", module="q_proj")
fig.write_html(work / "q_proj.html", include_plotlyjs=True)

# %% The "will DoRA help?" check on the LoRA-like run.
v = dora_diag.check(work / "base", work / "lora")
for verdict in v.verdicts:
    print(verdict.headline, "-", verdict.reason)

# %% Everything the CLI writes.
a.to_html(work / "report.html")
a.to_csv(work / "table.csv")
a.to_json(work / "summary.json")
print(f"report: {work / 'report.html'}")
