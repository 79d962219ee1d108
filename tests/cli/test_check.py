"""``dora-diag check``: printed verdict, JSON for CI, thresholds as options, exit codes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ckpt_helpers import write_checkpoint
from cli_helpers import assert_one_line_error, call, without_timings
from hub_helpers import cache_model

pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
from tiny_peft import save_lora_run  # noqa: E402
pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A 6-layer LLaMA base and a run directory of three LoRA adapter checkpoints."""
    return save_lora_run(tmp_path_factory.mktemp("check"), layers=6)


def test_check_prints_verdict_and_writes_json(lora_run, tmp_path, capsys):
    base, run = lora_run
    js = tmp_path / "verdict.json"
    code, out, err = call(capsys, "check", str(base), f"LoRA={run}", "--json", str(js))
    assert code == 0, err
    doc = json.loads(js.read_text())
    (v,) = doc["verdicts"]
    assert v["run"] == "LoRA" and v["method"] == "lora" and v["pooled"]["n"] == 36 and v["pooled"]["units"] == 6
    assert v["decision"] in ("dora_likely_helps", "marginal", "inconclusive") and v["statistic"] == "partial_r"
    assert v["thresholds"] == {"min_r": 0.3, "alpha": 0.05, "min_units": 6}
    assert out.startswith(f"LoRA (lora): {v['headline']}")
    assert "pooled" in out and "q_proj" in out and "v_proj" in out and "layers=6" in out
    assert f"decision: {v['decision']} (decided by {v['decided_by']}; statistic: partial r:" in out
    assert doc["bytes_read"] > 0 and doc["runs"][0]["checkpoints"][0]["method"] == "lora"


def test_dora_run_is_described_not_advised(tmp_path, capsys):
    base, run = save_lora_run(tmp_path, layers=2, steps=(5, 10), use_dora=True)
    code, out, err = call(capsys, "check", str(base), str(run))
    assert code == 0, err
    assert out.startswith("run (dora): DoRA run:") and "decision: not_applicable" in out
    assert "DoRA likely helps" not in out


def test_thresholds_change_the_decision(lora_run, tmp_path, capsys):
    base, run = lora_run
    js = tmp_path / "v.json"
    code, _, err = call(capsys, "check", str(base), str(run), "--json", str(js), "--min-units", "100", "-q")
    assert code == 0, err
    (v,) = json.loads(js.read_text())["verdicts"]
    assert v["decision"] == "inconclusive" and "too few layers: 6 independent layers < 100" in v["reason"]


def test_bad_threshold_and_unwritable_output_exit_2(lora_run, tmp_path, capsys):
    base, run = lora_run
    code, _, err = call(capsys, "check", str(base), str(run), "--min-units", "2")
    assert code == 2 and err.count("\n") == 1 and "min_units must be at least 3" in err
    code, _, err = call(capsys, "check", str(base), str(run), "--significance", "2")
    assert code == 2 and "--significance" in err
    code, _, err = call(capsys, "check", str(base), str(run), "--json", str(tmp_path / "missing" / "v.json"))
    assert code == 2 and "does not exist" in err


def test_pickle_adapter_exit_2(tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    base = tmp_path / "base"
    transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=64)).save_pretrained(base)
    code, _, err = call(capsys, "check", str(base), str(adapter))
    assert code == 2 and "never unpickles" in err


def test_check_json_is_byte_identical_across_runs(lora_run, tmp_path, capsys):
    base, run = lora_run
    texts = []
    for i in range(2):
        js = tmp_path / f"v{i}.json"
        assert call(capsys, "check", str(base), str(run), "-q", "--json", str(js))[0] == 0
        texts.append(without_timings(js.read_text()))
    assert '"verdicts"' in texts[0] and '"elapsed_s"' not in texts[0]
    assert texts[0] == texts[1]


def _name_base(run, base_id: str) -> None:
    """Every checkpoint's adapter_config.json names ``base_id`` as its base."""
    for config in run.glob("checkpoint-*/adapter_config.json"):
        config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": base_id}))


def test_run_alone_is_checked_against_the_cached_base_it_names(lora_run, tmp_path, capsys, monkeypatch):
    base, run = lora_run
    own = shutil.copytree(run, tmp_path / "run")
    _name_base(own, "org/tiny-llama")
    files = {f.name: f.read_bytes() for f in base.iterdir() if f.suffix in (".json", ".safetensors")}
    snapshot = cache_model(tmp_path / "hub", "org/tiny-llama", files)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    code, alone, err = call(capsys, "check", f"LoRA={own}", "--json", str(tmp_path / "alone.json"))
    assert code == 0, err
    code, given, err = call(capsys, "check", str(snapshot), f"LoRA={own}", "--json", str(tmp_path / "given.json"))
    assert code == 0, err
    assert alone == given and json.loads((tmp_path / "alone.json").read_text())["base"] == str(snapshot)
    assert without_timings((tmp_path / "alone.json").read_text()) == without_timings((tmp_path / "given.json").read_text())


def test_run_alone_whose_base_is_not_cached_exits_2(lora_run, tmp_path, capsys, monkeypatch):
    _, run = lora_run
    own = shutil.copytree(run, tmp_path / "run")
    _name_base(own, "org/absent")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    code, _, err = call(capsys, "check", str(own / "checkpoint-5"))
    assert_one_line_error(code, err, f"org/absent: no such file or directory, nor a model in the Hugging Face cache "
                                     f"{tmp_path / 'empty-hub'}")


def test_base_alone_is_audited_for_zero_channels(tmp_path, capsys, monkeypatch):
    w = torch.randn(8, 4)
    w[[1, 6]] = 0
    base = write_checkpoint(tmp_path / "base", {"layers.0.o_proj.weight": w, "layers.0.q_proj.weight": torch.randn(4, 4)})
    code, out, err = call(capsys, "check", str(base), "--json", str(tmp_path / "audit.json"))
    assert code == 0, err
    assert out.splitlines() == ["layers.0.o_proj.weight: 2 of 8 output channels (rows) all zero",
                                f"{base}: 1 of 2 weight matrices have all-zero output channels (rows): a naive DoRA "
                                "norm divides by zero there (PEFT gives NaN)"]
    assert json.loads((tmp_path / "audit.json").read_text())["findings"][0]["zero_channels"] == 2
    snapshot = cache_model(tmp_path / "hub", "org/zeros", {"model.safetensors": (base / "model.safetensors").read_bytes()})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    code, by_id, err = call(capsys, "check", "org/zeros")
    assert code == 0 and by_id.splitlines()[0] == out.splitlines()[0] and snapshot.is_dir(), err
    code, _, err = call(capsys, "check", str(base), "--out", str(tmp_path / "r.html"))
    assert_one_line_error(code, err, "--out (the HTML report) needs runs to check")
