"""The fine-tuning method of each run and checkpoint, from what the files say."""

from __future__ import annotations

import json

import pytest
import torch

import dora_diag
from dora_diag.io.method import adapter_method, run_method
from dora_diag.train.trainer import TrainConfig, train

@pytest.mark.parametrize("use_dora, use_rslora, ours, method", [
    (False, False, None, "lora"),
    (False, True, None, "rslora"),
    (True, False, None, "dora"),
    (True, True, None, "dora"),
    (True, False, json.dumps({"method": "dvora"}), "dvora"),
    (True, False, json.dumps({"method": "dora-frozen-magnitude"}), "dora-frozen-magnitude"),
    (False, True, json.dumps({"method": "lora", "use_rslora": True}), "rslora"),
    (True, False, "not json", "dora"),
    (False, False, json.dumps({"method": "something-else"}), "lora"),
])
def test_adapter_method(use_dora, use_rslora, ours, method):
    assert adapter_method(use_dora, use_rslora, ours) == method


def test_run_method_prefers_train_config(tmp_path):
    (tmp_path / "train_config.json").write_text(json.dumps({"method": "lora", "use_rslora": True}))
    assert run_method(str(tmp_path), ["lora"]) == ("rslora", "train_config.json")
    (tmp_path / "train_config.json").write_text(json.dumps({"config": {"method": "dvora"}}))
    assert run_method(str(tmp_path), ["dora"]) == ("dvora", "train_config.json")
    (tmp_path / "train_config.json").write_text("{broken")
    assert run_method(str(tmp_path), ["dora", "dora"]) == ("dora", "adapter_config.json and weights")
    assert run_method(str(tmp_path), ["ft"]) == ("ft", "weights (full checkpoint)")
    method, why = run_method(str(tmp_path), ["lora", "ft"])
    assert method == "unknown" and "ft, lora" in why


@pytest.mark.parametrize("method", ["ft", "lora", "dora", "dvora", "dora-magnitude-only", "dora-frozen-magnitude"])
def test_trained_runs_carry_their_method(base_dir, tmp_path, method):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path / method
        train(TrainConfig(out=str(run), method=method, model=str(base_dir), steps=2, save_every=2, batch_size=4,
                          rank=2, alpha=4.0, targets=("q_proj", "v_proj"), magnitude_only=("up_proj",),
                          device="cpu"))
    finally:
        torch.set_num_threads(threads)
    a = dora_diag.compare(base_dir, f"R={run}")
    (meta,) = a.meta.runs
    assert meta.method == method and meta.method_evidence == "train_config.json"
    assert {c.method for c in meta.checkpoints} == {method}   # the weights say so too
    assert set(a.table["method"]) == {method} and set(a.stats("module")["method"]) == {method}
