"""``dora-diag check --trial`` end to end on a small builtin-architecture model: the verdict
carries the trial block and says what decided it."""

from __future__ import annotations

import json

import pytest
import torch

from cli_helpers import call
from dora_diag.train.trainer import TrainConfig, train

@pytest.fixture(scope="module")
def lora_run(base_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("trial") / "lora"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(out=str(run), method="lora", model=str(base_dir), steps=6, save_every=3, batch_size=8,
                          rank=4, alpha=8.0, targets=("q_proj", "v_proj"), device="cpu"))
    finally:
        torch.set_num_threads(threads)
    return base_dir, run


def test_check_trial_writes_the_trial_block(lora_run, tmp_path, capsys):
    base, run = lora_run
    js = tmp_path / "v.json"
    code, out, err = call(capsys, "check", str(base), f"LoRA={run}", "--trial", "--trial-steps", "3",
                          "--trial-seeds", "2", "--min-units", "3", "--json", str(js), "--device", "cpu")
    assert code == 0, err
    (v,) = json.loads(js.read_text())["verdicts"]
    trial = v["trial"]
    assert v["method"] == "lora" and v["decided_by"] in ("trial", "none")
    assert sorted((r["method"], r["seed"]) for r in trial["runs"]) == [("dora", 0), ("dora", 1), ("lora", 0), ("lora", 1)]
    assert trial["settings"]["steps"] == 3 and len(trial["difference"]["per_seed"]) == 2
    assert "trial: eval loss DoRA − LoRA" in v["reason"] and "over 2 seeds, 3 steps each" in v["reason"]
    if v["decided_by"] == "none":
        assert "the matched trial does not decide it" in v["headline"]
    assert out.startswith(f"LoRA (lora): {v['headline']}")


def test_trial_of_a_dora_run_is_not_run(lora_run, tmp_path, capsys):
    """Only LoRA-family runs are trialled: a DoRA run given alongside gets no trial."""
    base, run = lora_run
    dora = tmp_path / "dora"
    train(TrainConfig(out=str(dora), method="dora", model=str(base), steps=3, save_every=3, batch_size=8, rank=4,
                      alpha=8.0, targets=("q_proj", "v_proj"), device="cpu"))
    js = tmp_path / "v.json"
    code, _, err = call(capsys, "check", str(base), f"DoRA={dora}", "--trial", "--trial-steps", "2",
                        "--json", str(js), "-q")
    assert code == 0, err
    (v,) = json.loads(js.read_text())["verdicts"]
    assert v["method"] == "dora" and v["trial"] is None and v["decision"] == "not_applicable"
