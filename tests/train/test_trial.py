"""The matched trial on the builtin model: settings from train_config.json, paired LoRA/DoRA runs
with the same batch order per seed, the paired difference, determinism, refusals, Ctrl-C."""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import pytest

from dora_diag.errors import InputError
from dora_diag.train import loop
from dora_diag.train.trainer import TrainConfig, TrainProgress, train
from dora_diag.train.trial import paired_difference, run_trial, summary


def user_run(base: Path, out: Path, method: str = "lora", **kw) -> Path:
    """A short run with non-default settings, so the trial visibly copies them."""
    opts = {"steps": 10, "save_every": 10, "batch_size": 8, "rank": 4, "alpha": 8.0, "lr": 3e-3,
            "targets": ("q_proj", "v_proj"), "warmup_steps": 5, "device": "cpu", **kw}
    return train(TrainConfig(out=str(out), method=method, model=str(base), **opts))


@pytest.fixture(scope="module")
def lora_run(base_dir, tmp_path_factory) -> Path:
    return user_run(base_dir, tmp_path_factory.mktemp("user") / "lora")


class Recorder(TrainProgress):
    def __init__(self, calls, label):
        self.calls, self.label = calls, label

    def start(self, total_steps):
        self.calls.append((self.label, "start", total_steps))

    def step(self, step, loss):
        self.calls.append((self.label, "step", step))

    def finish(self):
        self.calls.append((self.label, "finish"))


def test_trial_trains_matched_pairs_with_the_runs_settings(base_dir, lora_run, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    orders = []
    real_batches = loop.batches

    def recording(n, batch_size, generator):
        it = real_batches(n, batch_size, generator)
        first = next(it)
        orders.append(first.tolist())
        yield first
        yield from it

    monkeypatch.setattr(loop, "batches", recording)
    calls = []
    result = run_trial(base_dir, lora_run, steps=4, seeds=2, device="cpu",
                       progress=lambda method, seed, steps: Recorder(calls, (method, seed, steps)))
    s = result["settings"]
    assert (s["rank"], s["alpha"], s["lr"], s["batch_size"], s["targets"]) == (4, 8.0, 3e-3, 8, ("q_proj", "v_proj"))
    assert s["from"]["lr"] == "train_config.json" and s["from"]["steps"] == "argument"
    assert s["steps"] == 4 and s["warmup_steps"] == 2 and s["run_steps"] == 10  # the run's 50 % warmup
    assert [(r["method"], r["seed"], r["steps"]) for r in result["runs"]] == [
        ("lora", 0, 4), ("dora", 0, 4), ("lora", 1, 4), ("dora", 1, 4)]
    assert all(r["eval_loss"] > 0 and 0 <= r["eval_accuracy"] <= 1 and r["step_time_s"] > 0 for r in result["runs"])
    # Within a seed both methods see the same batches; the seeds differ.
    assert orders[0] == orders[1] and orders[2] == orders[3] and orders[0] != orders[2]
    per_seed = [result["runs"][i + 1]["eval_loss"] - result["runs"][i]["eval_loss"] for i in (0, 2)]
    diff = result["difference"]
    assert diff["per_seed"] == pytest.approx(per_seed) and diff["seeds"] == 2
    assert diff["mean"] == pytest.approx(sum(per_seed) / 2)
    assert diff["sd"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2 ** 0.5)
    run_calls = [("start", 4), *(("step", i) for i in range(1, 5)), ("finish",)]
    assert calls == [(run, *c) for run in (("lora", 0, 4), ("dora", 0, 4), ("lora", 1, 4), ("dora", 1, 4))
                     for c in run_calls]  # one progress per run, in training order
    assert list(tmp_path.iterdir()) == []  # the trial's run directories are gone
    json.dumps(result)


def test_same_seeds_give_the_same_numbers(base_dir, lora_run):
    a, b = (run_trial(base_dir, lora_run, steps=3, seeds=2, device="cpu") for _ in range(2))
    assert [r["eval_loss"] for r in a["runs"]] == [r["eval_loss"] for r in b["runs"]]
    assert a["difference"]["per_seed"] == b["difference"]["per_seed"]


def test_default_steps_are_the_runs_capped_by_the_budget(base_dir, lora_run, monkeypatch):
    import dora_diag.train.trial as trial
    monkeypatch.setattr(trial, "TRIAL_STEPS", 2)
    result = run_trial(base_dir, lora_run, seeds=2, device="cpu")
    assert result["settings"]["steps"] == 2 and result["settings"]["from"]["steps"] == "the run's steps, at most 2"


def test_settings_from_an_adapter_config_and_defaults(base_dir, lora_run, tmp_path):
    adapter = tmp_path / "adapter"  # a PEFT adapter directory: adapter_config.json, no train_config.json
    adapter.mkdir()
    for f in (lora_run / "checkpoint-10").iterdir():
        (adapter / f.name).write_bytes(f.read_bytes())
    result = run_trial(base_dir, adapter, steps=2, seeds=2, device="cpu")
    s = result["settings"]
    assert (s["rank"], s["alpha"], s["targets"]) == (4, 8.0, ("q_proj", "v_proj"))
    assert s["from"]["rank"] == s["from"]["targets"] == "adapter_config.json"
    assert s["lr"] == 4e-3 and s["from"]["lr"] == "default" and s["from"]["run_steps"] == "trainer_state.json"


@pytest.mark.parametrize("method", ["dora", "ft", "dvora"])
def test_refuses_runs_that_are_not_lora(base_dir, tmp_path, method):
    run = user_run(base_dir, tmp_path / method, method, steps=1, save_every=1, warmup_steps=0)
    with pytest.raises(InputError, match=f"method is '{method}'; the trial starts from a LoRA run"):
        run_trial(base_dir, run, steps=2)


def test_refuses_a_peft_dora_adapter_bad_settings_and_one_seed(base_dir, lora_run, tmp_path):
    adapter = tmp_path / "a"
    adapter.mkdir()
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "use_dora": True}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="DoRA adapter"):
        run_trial(base_dir, adapter)
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": False,
                                                             "target_modules": "all-linear"}))
    with pytest.raises(InputError, match="'all-linear' depends on the model class"):
        run_trial(base_dir, adapter)
    with pytest.raises(InputError, match="must be a model directory"):
        run_trial(tmp_path / "no-base", lora_run)
    with pytest.raises(InputError, match="at least 2 seeds"):
        run_trial(base_dir, lora_run, seeds=1)
    with pytest.raises(InputError, match="neither train_config.json nor adapter_config.json"):
        run_trial(base_dir, tmp_path / "a" / "..")
    broken = tmp_path / "broken"
    broken.mkdir()
    doc = json.loads((lora_run / "train_config.json").read_text())
    doc["config"]["lr"] = "fast"
    (broken / "train_config.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="config lr is 'fast', expected a float"):
        run_trial(base_dir, broken)


def test_ctrl_c_propagates_and_leaves_no_run_directories(base_dir, lora_run, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    class Interrupt(TrainProgress):
        def __init__(self, seed):
            self.seed = seed

        def step(self, step, loss):
            if self.seed == 1:  # in the third of four runs
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(base_dir, lora_run, steps=2, seeds=2, progress=lambda m, seed, n: Interrupt(seed), device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_summary_states_direction_size_and_spread():
    runs = [{"method": m, "seed": s, "eval_loss": loss, "eval_accuracy": acc}
            for s, (lo, do) in enumerate([(1.0, 0.97), (1.0, 0.95)])
            for m, loss, acc in (("lora", lo, 0.5), ("dora", do, 0.6))]
    diff = paired_difference(runs)
    assert diff["mean"] == pytest.approx(-0.04) and diff["sd"] == pytest.approx(statistics.stdev([-0.03, -0.05]))
    assert summary(diff, 100).startswith("DoRA lowered eval loss by 0.04 ± 0.014 over 2 seeds (matched 100-step")
    assert "eval accuracy +0.1 ± 0" in summary(diff, 100)
