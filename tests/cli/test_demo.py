"""``dora-diag demo`` on a small base and few steps (the real default is exercised by hand: see README)."""

from __future__ import annotations

import re

import pytest
import torch

from cli_helpers import call
from dora_diag.train.demo import DemoConfig, run_configs
from dora_diag.train.model import BuiltinConfig, BuiltinTransformer, save_full_model

pytestmark = pytest.mark.filterwarnings("ignore")


def test_demo_trains_three_methods_and_writes_the_report(tmp_path, capsys):
    torch.manual_seed(0)
    base = tmp_path / "base"
    base.mkdir()
    save_full_model(BuiltinTransformer(BuiltinConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2)),
                    base)
    report, runs = tmp_path / "demo.html", tmp_path / "runs"
    code, out, err = call(capsys, "demo", "--model", str(base), "--steps", "6", "--save-every", "2",
                          "--runs-dir", str(runs), "--out", str(report), "-q")
    assert code == 0, err
    html = report.read_text()
    assert all(label in html for label in ("FT", "LoRA", "DoRA"))
    lines = out.splitlines()
    assert lines[0] == f"report: {report}"
    for label, line in zip(("FT", "LoRA", "DoRA"), lines[1:4]):
        assert re.match(rf"{label}\s+eval token acc \d\.\d{{3}}  exact match \d\.\d{{3}}  "
                        r"r\(Q\)=[+-]\d\.\d\d \(n=6\)  r\(V\)=[+-]\d\.\d\d \(n=6\)$", line), line
    assert sorted(p.name for p in runs.iterdir()) == ["dora", "ft", "lora"]
    assert sorted(p.name for p in (runs / "lora").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4",
                                                                          "checkpoint-6"]


def test_demo_runs_differ_only_in_method_and_learning_rate(tmp_path):
    configs = run_configs(DemoConfig(), tmp_path)
    assert list(configs) == ["ft", "lora", "dora"]
    fields = [{k: v for k, v in vars(c).items() if k not in ("method", "lr", "out")} for c in configs.values()]
    assert fields[0] == fields[1] == fields[2]
    assert configs["lora"].lr == configs["dora"].lr
