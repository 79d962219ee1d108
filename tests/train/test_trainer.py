"""The trainer: run directory layout, logs, schedule, seeds, atomic checkpoints on interrupt,
adapter runs the analyzer reads, NF4 runs, and the cached task-A base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dora_diag
from dora_diag.errors import InputError
from dora_diag.io.checkpoint import open_checkpoint
from dora_diag.train.builtin import BaseRecipe, builtin_base
from dora_diag.train.model import BuiltinConfig
from dora_diag.train.loop import lr_factor
from dora_diag.train.trainer import TrainConfig, TrainProgress, train


def quick(out: Path, base: Path, **kw) -> TrainConfig:
    opts = {"steps": 6, "save_every": 3, "log_every": 2, "batch_size": 8, "lr": 3e-3, "device": "cpu", **kw}
    return TrainConfig(out=str(out), model=str(base), **opts)


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_ft_run_layout_logs_and_names(base_dir, tmp_path):
    run = train(quick(tmp_path / "ft", base_dir, method="ft"))
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-3", "checkpoint-6", "metrics.jsonl",
                                                       "train_config.json"]
    for step in (3, 6):
        ck = run / f"checkpoint-{step}"
        assert json.loads((ck / "trainer_state.json").read_text())["global_step"] == step
        assert set(open_checkpoint(ck).tensors) == set(open_checkpoint(base_dir).tensors)
    log = read_metrics(run)
    train_recs = [r for r in log if "loss" in r]
    assert [r["step"] for r in train_recs] == [2, 4, 6]
    assert all(r["step_time_s"] > 0 and r["peak_mem_mb"] > 0 and r["lr"] > 0 for r in train_recs)
    evals = [r for r in log if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 3, 6]
    assert all(0 <= r["eval_accuracy"] <= 1 and 0 <= r["eval_exact_match"] <= 1 for r in evals)
    meta = json.loads((run / "train_config.json").read_text())
    assert meta["config"]["method"] == "ft" and meta["base"] == str(base_dir)
    assert meta["measured"]["trainable_params"] == meta["measured"]["total_params"]
    assert dora_diag.compare(base_dir, f"FT={run}").meta.runs[0].log == tuple(log)


def test_training_lowers_the_loss(base_dir, tmp_path):
    run = train(quick(tmp_path / "r", base_dir, method="ft", steps=40, save_every=40, log_every=10,
                      batch_size=32))
    evals = [r["eval_loss"] for r in read_metrics(run) if "eval_loss" in r]
    assert evals[-1] < evals[0] - 0.15


def test_same_seed_same_weights_other_seed_differs(base_dir, tmp_path):
    runs = [train(quick(tmp_path / name, base_dir, method="lora", seed=seed, save_every=6))
            for name, seed in (("a", 1), ("b", 1), ("c", 2))]
    a, b, c = (load_file(r / "checkpoint-6" / "adapter_model.safetensors") for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("method", ["lora", "dora", "dvora", "dora-magnitude-only"])
def test_adapter_runs_are_peft_dirs_the_analyzer_reads(base_dir, tmp_path, method):
    run = train(quick(tmp_path / method, base_dir, method=method))
    ck = run / "checkpoint-6"
    config = json.loads((ck / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["use_dora"] == (method != "lora")
    table = dora_diag.compare(base_dir, f"{method}={run}").table
    assert sorted(table["step"].unique().tolist()) == [3, 6]
    modules = set(table["module"])
    assert {"q_proj", "v_proj"} <= modules
    if method == "dora-magnitude-only":
        assert {"gate_proj", "up_proj", "down_proj"} <= modules
    meta = json.loads((run / "train_config.json").read_text())["measured"]
    assert 0 < meta["trainable_params"] < meta["total_params"]


def test_magnitude_only_trains_fewer_parameters_on_the_mlp(base_dir, tmp_path):
    dora = json.loads((train(quick(tmp_path / "d", base_dir, method="dora", steps=1, save_every=1,
                                   targets=("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj")))
                       / "train_config.json").read_text())["measured"]["trainable_params"]
    mag = json.loads((train(quick(tmp_path / "m", base_dir, method="dora-magnitude-only", steps=1,
                                  save_every=1)) / "train_config.json").read_text())["measured"]["trainable_params"]
    assert mag < dora


def test_nf4_run_reports_smaller_model(base_dir, tmp_path):
    run = train(quick(tmp_path / "q", base_dir, method="dora", quantize="nf4", targets=("q_proj", "v_proj")))
    measured = json.loads((run / "train_config.json").read_text())["measured"]
    assert measured["quantized_modules"] == 14  # 7 projections x 2 layers; lm_head stays
    assert measured["model_bytes"] < measured["model_bytes_full"] * 0.6
    assert (run / "checkpoint-6" / "adapter_model.safetensors").is_file()


def test_lr_schedule_warmup_then_linear_decay():
    assert [round(lr_factor(s, 4, 12), 4) for s in range(0, 13, 2)] == [0.25, 0.75, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert lr_factor(0, 0, 10) == 1.0


class InterruptAt(TrainProgress):
    def __init__(self, step: int):
        self.at = step

    def step(self, step: int, loss: float) -> None:
        if step == self.at:
            raise KeyboardInterrupt


def test_interrupt_keeps_completed_checkpoints(base_dir, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(quick(tmp_path / "r", base_dir, method="ft", steps=10), InterruptAt(5))
    run = tmp_path / "r"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-3", "metrics.jsonl", "train_config.json"]
    assert len(open_checkpoint(run / "checkpoint-3").tensors) > 0


def test_interrupt_while_saving_leaves_no_partial_checkpoint(base_dir, tmp_path, monkeypatch):
    import dora_diag.train.trainer as trainer

    def broken_state(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_full_model", broken_state)
    with pytest.raises(KeyboardInterrupt):
        train(quick(tmp_path / "r", base_dir, method="ft"))
    assert not [p.name for p in (tmp_path / "r").iterdir() if "checkpoint" in p.name]


@pytest.mark.parametrize("changes, message", [
    ({"method": "sgd"}, "unknown method"),
    ({"steps": 0}, "steps must be positive"),
    ({"warmup_steps": 6}, "warmup steps"),
    ({"method": "ft", "quantize": "nf4"}, "needs an adapter method"),
    ({"quantize": "int3"}, "quantize must be one of"),
    ({"data": "missing.jsonl"}, "no such file"),
    ({"targets": ("nothing_here",)}, "matches targets"),
])
def test_bad_configs_are_input_errors(base_dir, tmp_path, changes, message):
    with pytest.raises(InputError, match=message):
        train(quick(tmp_path / "r", base_dir, **changes))


def test_refuses_to_overwrite_a_run_and_builtin_needs_builtin_data(base_dir, tmp_path):
    train(quick(tmp_path / "r", base_dir, method="ft", steps=1, save_every=1))
    with pytest.raises(InputError, match="already holds a training run"):
        train(quick(tmp_path / "r", base_dir, method="ft", steps=1, save_every=1))
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello"}\n')
    with pytest.raises(InputError, match="data='builtin' only"):
        train(quick(tmp_path / "s", base_dir, data=str(data)))


def test_builtin_base_is_built_once_deterministically_and_learns_task_a(tmp_path):
    small = BuiltinConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2)
    recipe = BaseRecipe(model=small, train_examples=256, eval_examples=64, steps=60, batch_size=32, warmup_steps=5)
    first = builtin_base(recipe, cache=tmp_path / "c1")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert builtin_base(recipe, cache=tmp_path / "c1") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    other = load_file(builtin_base(recipe, cache=tmp_path / "c2") / "model.safetensors")
    assert all(torch.equal(v, other[k]) for k, v in load_file(first / "model.safetensors").items())
    info = json.loads((first / "base_info.json").read_text())
    assert info["task_A"]["eval_loss"] < info["task_B"]["eval_loss"]
    assert not [p for p in (tmp_path / "c1").iterdir() if p.name.startswith(".building")]


def test_threads_by_model_size():
    from dora_diag.train.trainer import threads_for, torch_threads
    cpu, small = torch.device("cpu"), torch.nn.Linear(64, 64)
    big = torch.nn.Linear(5000, 5000, device="meta")  # 25M parameters, no memory
    with torch_threads(2):  # the fixture runs these tests on one thread
        assert threads_for(small, cpu) == 1
        assert threads_for(big, cpu) == 2 and threads_for(small, torch.device("cuda")) == 2
    assert torch.get_num_threads() == 1


def test_diverging_loss_is_a_training_error_not_bad_input(base_dir, tmp_path, capsys):
    """A run whose loss becomes NaN failed on its own: one line, exit 1, not the bad-input exit 2."""
    from cli_helpers import call
    from dora_diag.errors import TrainingError

    cfg = TrainConfig(out=str(tmp_path / "nan"), method="ft", model=str(base_dir), steps=3, save_every=3,
                      batch_size=4, lr=1e30, device="cpu")
    with pytest.raises(TrainingError, match="lower the learning rate"):
        train(cfg)
    code, _, err = call(capsys, "train", "--method", "ft", "--model", str(base_dir), "--steps", "3",
                        "--save-every", "3", "--batch-size", "4", "--lr", "1e30", "--out", str(tmp_path / "nan2"),
                        "-q")
    assert code == 1 and err.strip().startswith("dora-diag: training failed: loss became")
    assert "internal error" not in err and err.count("\n") == 1
