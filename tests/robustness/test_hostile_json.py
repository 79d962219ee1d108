"""Issue 13, causes 4 and 5: deep or huge JSON and huge integers, in every JSON file dora-diag
reads. Files that define the checkpoint refuse with one line naming the file (exit 2); training
logs are informative: a bad record is a warning and the run goes on (exit 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ckpt_helpers import write_checkpoint
from cli_helpers import assert_one_line_error, call
from hostile_files import ADAPTER_KEY, Q, adapter, deep_json, long_number, raw_header

BOMBS = {"100000-deep": deep_json(), "5000-digit number": long_number(), "401-digit number": "1" + "0" * 400}


def assert_clean(code: int, err: str) -> None:
    """Exit 0, or exit 2 with one line; never an internal error."""
    assert code in (0, 2) and "internal error" not in err and "Traceback" not in err, err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err


@pytest.fixture
def pair(make_pair):
    b, f, _, _ = make_pair(layers=2, out=8, inp=16)
    return b, f


def _in_header(tmp, b, f, bomb):
    raw_header(f / "model.safetensors", ('{"x": {"dtype": "F32", "shape": [' + bomb + '], "data_offsets": [0, 4]}}').encode(), 4)
    return "model.safetensors"


def _in_index(tmp, b, f, bomb):
    d = write_checkpoint(tmp / "sharded", {Q.format(0): torch.ones(8, 16)}, shards=2)
    (d / "model.safetensors.index.json").write_text('{"weight_map": {}, "metadata": ' + bomb + "}")
    f.rename(tmp / "unused")
    d.rename(f)
    return "model.safetensors.index.json"


def _in_config(tmp, b, f, bomb):
    (f / "config.json").write_text('{"model_type": "llama", "x": ' + bomb + "}")
    return "config.json"


def _in_adapter_config(tmp, b, f, bomb):
    ad = adapter(tmp / "ad", {ADAPTER_KEY.format(0, "A"): torch.ones(2, 16), ADAPTER_KEY.format(0, "B"): torch.ones(8, 2)})
    (ad / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 2, "x": ' + bomb + "}")
    f.rename(tmp / "unused")
    ad.rename(f)
    return "adapter_config.json"


REFUSING = {"safetensors header": _in_header, "index": _in_index, "config.json": _in_config,
            "adapter_config.json": _in_adapter_config}


@pytest.mark.parametrize("bomb", list(BOMBS))
@pytest.mark.parametrize("where", list(REFUSING))
def test_bombs_in_checkpoint_files_are_refused_or_harmless(where, bomb, pair, tmp_path, capsys):
    b, f = pair
    name = REFUSING[where](tmp_path, b, f, BOMBS[bomb])
    code, _, err = call(capsys, "compare", str(b), str(f), "-q")
    if bomb == "100000-deep":
        assert_one_line_error(code, err, "nested deeper than 64 levels")
        assert name in err
    else:
        assert_clean(code, err)


def _run_with_log(tmp: Path, b: Path, f: Path) -> Path:
    """A run directory holding ``f`` as its checkpoint-10."""
    run = tmp / "run"
    run.mkdir()
    f.rename(run / "checkpoint-10")
    return run


@pytest.mark.parametrize("bomb", [*BOMBS, "900-deep record"])
def test_bombs_in_metrics_jsonl_are_warnings(bomb, pair, tmp_path, capsys):
    b, f = pair
    run = _run_with_log(tmp_path, b, f)
    text = deep_json(900) if bomb == "900-deep record" else BOMBS[bomb]
    (run / "metrics.jsonl").write_text('{"step": 5, "loss": 0.5}\n{"step": 7, "x": ' + text + '}\n{"step": 9}\n')
    js = tmp_path / "s.json"
    code, _, err = call(capsys, "compare", str(b), str(run), "-q", "--json", str(js))
    assert code == 0, err
    doc = json.loads(js.read_text())
    if "deep" in bomb:
        assert [r["step"] for r in doc["runs"][0]["log"]] == [5, 9]
        assert any("metrics.jsonl: 1 log record(s) left out (line 2 is " in w for w in doc["warnings"]), doc["warnings"]
    else:   # a number too long to keep exact is inf, written as null
        assert doc["runs"][0]["log"][1] == {"step": 7, "x": None}


@pytest.mark.parametrize("bomb", [*BOMBS, "900-deep record"])
def test_bombs_in_trainer_state_are_warnings(bomb, pair, tmp_path, capsys):
    b, f = pair
    run = _run_with_log(tmp_path, b, f)
    text = deep_json(900) if bomb == "900-deep record" else BOMBS[bomb]
    (run / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": 10, "log_history": ' + text + "}")
    js = tmp_path / "s.json"
    code, _, err = call(capsys, "compare", str(b), str(run), "-q", "--json", str(js))
    assert code == 0, err
    doc = json.loads(js.read_text())
    assert doc["runs"][0]["log"] == []
    assert any("trainer_state.json" in w for w in doc["warnings"]) == ("deep" in bomb), doc["warnings"]


def test_nested_values_of_log_records_are_dropped_not_written(pair, tmp_path, capsys):
    b, f = pair
    run = _run_with_log(tmp_path, b, f)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5, "x": json.loads(deep_json(60)),
                                                   "big": 10**30}) + "\n")
    js = tmp_path / "s.json"
    code, _, err = call(capsys, "compare", str(b), str(run), "-q", "--json", str(js), "--out", str(tmp_path / "r.html"))
    assert code == 0, err
    assert json.loads(js.read_text())["runs"][0]["log"] == [{"step": 1, "loss": 0.5}]


def _huge_folder_step(run: Path) -> Path:
    (run / "checkpoint-10").rename(run / "checkpoint-999999999999999999999")
    return run


def _huge_global_step(run: Path) -> Path:
    (run / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": 1' + "0" * 30 + "}")
    return run / "checkpoint-10"   # a checkpoint given alone takes its step from trainer_state.json


HUGE_STEPS = {
    "checkpoint folder": (_huge_folder_step, "checkpoint-999999999999999999999: step 999999999999999999999 is out of range"),
    "global_step": (_huge_global_step, "trainer_state.json: global_step (too long) is out of range"),
}


@pytest.mark.parametrize("case", list(HUGE_STEPS))
def test_huge_steps_are_named(case, pair, tmp_path, capsys):
    b, f = pair
    mutate, message = HUGE_STEPS[case]
    code, _, err = call(capsys, "compare", str(b), str(mutate(_run_with_log(tmp_path, b, f))), "-q")
    assert_one_line_error(code, err, message)


def test_negative_and_huge_log_steps_are_left_out(pair, tmp_path, capsys):
    b, f = pair
    run = _run_with_log(tmp_path, b, f)
    (run / "metrics.jsonl").write_text('{"step": -1}\n{"step": 1' + "0" * 30 + '}\n{"step": 3, "loss": 1}\n')
    js = tmp_path / "s.json"
    code, _, err = call(capsys, "compare", str(b), str(run), "-q", "--json", str(js))
    assert code == 0, err
    doc = json.loads(js.read_text())
    assert [r["step"] for r in doc["runs"][0]["log"]] == [3]
    assert any("2 log record(s) left out (step -1; a step out of range)" in w for w in doc["warnings"]), doc["warnings"]


@pytest.mark.parametrize("field,value,message", [
    ("r", 10**400, "r is inf, expected a positive integer up to 65536"),
    ("r", 10**50, "r is an integer of 51 digits, expected a positive integer up to 65536"),
    ("r", 2**70, "r is 1180591620717411303424, expected a positive integer up to 65536"),
    ("lora_alpha", 10**400, "lora_alpha is inf, expected a finite number"),
    ("lora_alpha", -(10**400), "lora_alpha is -inf, expected a finite number"),
    ("lora_alpha", 10**310, "lora_alpha is inf, expected a finite number"),
    ("rank_pattern", {"q_proj": 10**400}, "rank_pattern['q_proj'] is inf"),
    ("alpha_pattern", {"q_proj": 10**400}, "alpha_pattern['q_proj'] is inf"),
])
def test_huge_adapter_numbers_are_named(field, value, message, pair, tmp_path, capsys):
    b, _ = pair
    ad = adapter(tmp_path / "ad", {ADAPTER_KEY.format(0, "A"): torch.ones(2, 16), ADAPTER_KEY.format(0, "B"): torch.ones(8, 2)},
                 **{field: value})
    code, _, err = call(capsys, "compare", str(b), str(ad), "-q")
    assert_one_line_error(code, err, message)


@pytest.mark.parametrize("index", ["99999999999999999999", "9" * 400, "²", "١٢"])
def test_absurd_layer_numbers_do_not_crash_the_table(index, tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    names = [Q.format(0), f"model.layers.{index}.self_attn.q_proj.weight"]
    base = {n: torch.randn(4, 4, generator=g) for n in names}
    b = write_checkpoint(tmp_path / "b", base)
    f = write_checkpoint(tmp_path / "f", {n: w + 0.01 for n, w in base.items()})
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = call(capsys, "compare", str(b), str(f), "--csv", str(out / "t.csv"), "--json", str(out / "s.json"),
                        "--out", str(out / "r.html"))
    assert code == 0, err
    assert len((out / "t.csv").read_text(encoding="utf-8").splitlines()) == 3


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_bombs_in_train_config_only_lose_the_method_evidence(bomb, pair, tmp_path, capsys):
    b, f = pair
    run = _run_with_log(tmp_path, b, f)
    (run / "train_config.json").write_text('{"config": {"method": "lora", "x": ' + BOMBS[bomb] + "}}")
    js = tmp_path / "s.json"
    code, _, err = call(capsys, "compare", str(b), str(run), "-q", "--json", str(js))
    assert code == 0, err
    assert json.loads(js.read_text())["runs"][0]["method"] == ("ft" if "deep" in bomb else "lora")
