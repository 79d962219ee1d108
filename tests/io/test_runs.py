"""Run directories: checkpoint-N ordering, labels, a final checkpoint at the root, logs."""

from __future__ import annotations

import json

import pytest
import torch

from dora_diag.errors import InputError
from dora_diag.io.runs import expand_run, expand_runs, parse_spec
from ckpt_helpers import write_checkpoint


def test_parse_spec(tmp_path):
    assert parse_spec("LoRA=runs/lora") == ("LoRA", "runs/lora")
    assert parse_spec("runs/a=b") == (None, "runs/a=b")
    weird = tmp_path / "x=y"
    weird.mkdir()
    assert parse_spec(str(weird)) == (None, str(weird))


def test_run_directory_orders_by_step_and_appends_root_final(tmp_path):
    run = tmp_path / "run"
    for step in (100, 20, 3):
        write_checkpoint(run / f"checkpoint-{step}", {"w.weight": torch.ones(2, 2)})
        (run / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    write_checkpoint(run, {"w.weight": torch.ones(2, 2)})
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\nnot json\n{"loss": 1}\n{"step": 2, "loss": 1.5}\n')
    r = expand_run(f"FT={run}")
    assert r.label == "FT"
    assert [c.step for c in r.checkpoints] == [3, 20, 100, None]
    assert [c.name for c in r.checkpoints] == ["checkpoint-3", "checkpoint-20", "checkpoint-100", "final"]
    assert [rec["step"] for rec in r.log] == [1, 2]


def test_trainer_state_log_history_is_the_fallback_log(tmp_path):
    run = tmp_path / "hf"
    write_checkpoint(run / "checkpoint-5", {"w.weight": torch.ones(2, 2)})
    (run / "checkpoint-5" / "trainer_state.json").write_text(json.dumps(
        {"global_step": 5, "log_history": [{"step": 5, "loss": 0.7, "eval_accuracy": 0.5}]}))
    r = expand_run(run)
    assert r.label == "hf" and r.checkpoints[0].step == 5
    assert r.log == ({"step": 5, "loss": 0.7, "eval_accuracy": 0.5},)


def test_duplicate_labels_and_missing_paths(tmp_path):
    write_checkpoint(tmp_path / "a", {"w.weight": torch.ones(2, 2)})
    with pytest.raises(InputError, match="labelled"):
        expand_runs([tmp_path / "a", f"a={tmp_path / 'a'}"])
    with pytest.raises(InputError, match="no such file"):
        expand_run(tmp_path / "missing")
