"""``dora-diag demo`` on a small base and few steps (the real default is measured by hand: see README)."""

from __future__ import annotations

import re
from dataclasses import asdict

import pytest
import torch

from cli_helpers import call
from dora_diag.demo import DemoConfig, DemoResult, MethodSummary, run_configs, spread
from dora_diag.train.model import BuiltinConfig, BuiltinTransformer, save_full_model

pytestmark = pytest.mark.filterwarnings("ignore")
SPREAD = r"(\d\.\d{3}) \((\d\.\d{3})\.\.(\d\.\d{3})\)"
R_SPREAD = r"([+-]\d\.\d\d) \(([+-]\d\.\d\d)\.\.([+-]\d\.\d\d)\)"


def test_demo_trains_every_method_per_seed_and_prints_the_spread(tmp_path, capsys):
    torch.manual_seed(0)
    base = tmp_path / "base"
    base.mkdir()
    save_full_model(BuiltinTransformer(BuiltinConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2)),
                    base)
    report, runs = tmp_path / "demo.html", tmp_path / "runs"
    code, out, err = call(capsys, "demo", "--model", str(base), "--steps", "4", "--save-every", "2",
                          "--seeds", "2", "--seed", "5", "--runs-dir", str(runs), "--out", str(report), "-q")
    assert code == 0, err
    html = report.read_text()
    assert all(label in html for label in ("FT", "LoRA", "DoRA"))
    lines = out.splitlines()
    assert lines[0] == f"report: {report}"
    assert lines[1].startswith("median (min..max) over seeds 5, 6; r = Pearson r") and "n=4/4 points" in lines[1]
    for label, line in zip(("FT", "LoRA", "DoRA"), lines[2:5]):
        m = re.match(rf"{label}\s+eval token acc {SPREAD}  exact match {SPREAD}  r\(Q\) {R_SPREAD}  "
                     rf"r\(V\) {R_SPREAD}$", line)
        assert m, line
        for i in range(0, 12, 3):  # min <= median <= max for every statistic
            assert float(m[i + 2]) <= float(m[i + 1]) <= float(m[i + 3])
    assert sorted(p.name for p in runs.iterdir()) == ["seed5", "seed6"]
    assert sorted(p.name for p in (runs / "seed6").iterdir()) == ["dora", "ft", "lora"]
    assert sorted(p.name for p in (runs / "seed6" / "lora").glob("checkpoint-*")) == ["checkpoint-2",
                                                                                    "checkpoint-4"]


def test_demo_runs_differ_only_in_method_and_seed(tmp_path):
    configs = run_configs(DemoConfig(), tmp_path, 3)
    assert list(configs) == ["ft", "lora", "dora"]
    resolved = {m: c.resolved() for m, c in configs.items()}
    fields = [{k: v for k, v in asdict(c).items() if k not in ("method", "lr", "out")} for c in resolved.values()]
    assert fields[0] == fields[1] == fields[2] and fields[0]["seed"] == 3
    assert resolved["lora"].lr == resolved["dora"].lr == 4e-3 and resolved["ft"].lr == 1e-3
    assert resolved["lora"].warmup_steps == 20 and len(resolved["lora"].targets) == 7


def test_summary_lines_are_median_and_range():
    assert spread([0.3, 0.1, 0.2], ".3f") == "0.200 (0.100..0.300)"
    assert spread([float("nan")], "+.2f") == "n/a"
    evals = [{"eval_accuracy": a, "eval_exact_match": 0.0} for a in (0.5, 0.1, 0.4)]
    m = MethodSummary("LoRA", [], evals, {"q_proj": [0.9, -0.1, 0.2], "v_proj": [0.5, 0.5, 0.5]},
                      {"q_proj": 16, "v_proj": 16})
    lines = DemoResult("r.html", "b", [0, 1, 2], [m]).lines()
    assert lines[1] == ("LoRA  eval token acc 0.400 (0.100..0.500)  exact match 0.000 (0.000..0.000)  "
                        "r(Q) +0.20 (-0.10..+0.90)  r(V) +0.50 (+0.50..+0.50)")
