"""``dora-diag train``: a run directory that compare/check read, one-line errors, Ctrl-C message."""

from __future__ import annotations

import json
import re

import pytest
import torch

from cli_helpers import assert_one_line_error, call
from dora_diag.train.model import BuiltinConfig, BuiltinTransformer, save_full_model

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    save_full_model(BuiltinTransformer(BuiltinConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2)), d)
    yield d
    torch.set_num_threads(before)


def test_train_then_compare(base_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = call(capsys, "train", "--method", "dora", "--model", str(base_dir), "--steps", "4",
                             "--save-every", "2", "--batch-size", "8", "--targets", "q_proj, v_proj,o_proj",
                             "--magnitude-lr-mult", "2", "--device", "cpu", "--out", str(out))
    assert code == 0, err
    assert f"run written to {out}" in stdout and "checkpoint-4" in stdout
    assert re.search(r"^eval before training:  loss \d+\.\d{4}  accuracy \d\.\d{4}  exact_match \d\.\d{4}$",
                     stdout, re.M)
    assert re.search(r"^eval after 4 steps: loss \d+\.\d{4}  accuracy", stdout, re.M)
    cfg = json.loads((out / "train_config.json").read_text())["config"]
    assert cfg["targets"] == ["q_proj", "v_proj", "o_proj"] and cfg["magnitude_lr_mult"] == 2.0
    assert (out / "checkpoint-2" / "adapter_config.json").is_file()
    code, stdout, err = call(capsys, "compare", str(base_dir), f"DoRA={out}", "--json", str(tmp_path / "a.json"))
    assert code == 0, err
    doc = json.loads((tmp_path / "a.json").read_text())
    assert [c["step"] for c in doc["runs"][0]["checkpoints"]] == [2, 4]


@pytest.mark.parametrize("args, message", [
    (["--model", "no/such/dir"], "no such directory"),
    (["--steps", "0"], "steps must be positive"),
    (["--method", "ft", "--quantize", "nf4"], "needs an adapter method"),
])
def test_bad_input_exits_2_with_one_line(base_dir, tmp_path, capsys, args, message):
    argv = ["train", "--model", str(base_dir), "--out", str(tmp_path / "r"), *args]
    code, _, err = call(capsys, *argv)
    assert_one_line_error(code, err, message)


def test_interrupt_names_the_last_checkpoint(base_dir, tmp_path, capsys, monkeypatch):
    import dora_diag.cli.train as cli_train

    def step(self, step, loss):
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_train.TrainBar, "step", step)
    out = tmp_path / "r"
    code, _, err = call(capsys, "train", "--method", "ft", "--model", str(base_dir), "--steps", "5",
                        "--save-every", "2", "--batch-size", "4", "--device", "cpu", "--out", str(out))
    assert code == 130 and f"last complete checkpoint: {out / 'checkpoint-2'}" in err


def test_defaults_are_trainconfigs_resolved(base_dir, tmp_path, capsys):
    from dora_diag.train.config import ALL_PROJECTIONS, DEFAULT_LR
    out = tmp_path / "run"
    code, _, err = call(capsys, "train", "--method", "dvora", "--model", str(base_dir), "--steps", "20",
                        "--save-every", "20", "--batch-size", "4", "--device", "cpu", "--out", str(out), "-q")
    assert code == 0, err
    cfg = json.loads((out / "train_config.json").read_text())["config"]
    assert cfg["lr"] == DEFAULT_LR["adapter"] and cfg["warmup_steps"] == 2 and cfg["rank"] == 8
    assert tuple(cfg["targets"]) == ALL_PROJECTIONS and cfg["threads"] == 1  # a tiny model: one thread
