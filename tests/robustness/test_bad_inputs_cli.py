"""Every bad input of issue 8 through the real CLI: exit 2, one line on stderr naming the
problem, no traceback, no output or temp files. Odd but usable inputs exit 0 with warnings."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from cli_helpers import assert_one_line_error, call
from ckpt_helpers import reference_changes, write_checkpoint

Q = "model.layers.{}.self_attn.q_proj.weight"


class Planted:
    """Unpickling this creates ``marker``: proof that nobody unpickled the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.fixture
def pair(make_pair):
    b, f, _, _ = make_pair(layers=2, out=8, inp=16)
    return b, f


def _outputs(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return ["--csv", str(out / "t.csv"), "--json", str(out / "s.json")]


def _rewrite(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


def _pickles_only(tmp, b, f):
    d = tmp / "old"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(Planted(tmp / "UNPICKLED")))
    return [str(b), str(d)]


def _pt_file(tmp, b, f):
    (tmp / "model.pt").write_bytes(pickle.dumps(Planted(tmp / "UNPICKLED")))
    return [str(tmp / "model.pt"), str(f)]


def _truncated(tmp, b, f):
    raw = (f / "model.safetensors").read_bytes()
    _rewrite(f / "model.safetensors", raw[: len(raw) - 7])
    return [str(b), str(f)]


def _garbage_header(tmp, b, f):
    _rewrite(f / "model.safetensors", struct.pack("<Q", 6) + b"{oops}" + b"\0" * 32)
    return [str(b), str(f)]


def _oversized_header(tmp, b, f):
    _rewrite(f / "model.safetensors", struct.pack("<Q", 2**62) + b"{}")
    return [str(b), str(f)]


def _sharded(tmp, mutate):
    d = write_checkpoint(tmp / "sharded", {Q.format(i): torch.randn(8, 16) for i in range(2)}, shards=2)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    mutate(d, index["weight_map"])
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return d


def _missing_shard(tmp, b, f):
    return [str(b), str(_sharded(tmp, lambda d, wm: wm.update({Q.format(0): "model-00009-of-00009.safetensors"})))]


def _missing_tensor(tmp, b, f):
    return [str(b), str(_sharded(tmp, lambda d, wm: wm.update({Q.format(9): "model-00001-of-00002.safetensors"})))]


def _shard_outside(tmp, b, f):
    return [str(b), str(_sharded(tmp, lambda d, wm: wm.update({Q.format(0): "../base/model.safetensors"})))]


def _duplicate_tensor(tmp, b, f):
    d = tmp / "dup"
    d.mkdir()
    save_file({Q.format(0): torch.ones(8, 16)}, str(d / "one.safetensors"))
    save_file({Q.format(0): torch.zeros(8, 16)}, str(d / "two.safetensors"))
    return [str(b), str(d)]


def _quantized(quant: dict):
    def make(tmp, b, f):
        cfg = json.loads((f / "config.json").read_text())
        (f / "config.json").write_text(json.dumps({**cfg, "quantization_config": quant}))
        return [str(b), str(f)]
    return make


def _packed_without_config(tmp, b, f):
    d = write_checkpoint(tmp / "gptq", {"model.layers.0.self_attn.q_proj.qweight": torch.zeros(2, 8, dtype=torch.int32),
                                        "model.layers.0.self_attn.q_proj.scales": torch.ones(1, 8).half()})
    return [str(b), str(d)]


def _integer_base(tmp, b, f):
    d = write_checkpoint(tmp / "ints", {Q.format(0): torch.zeros(8, 16, dtype=torch.int8)})
    return [str(d), str(f)]


def _other_architecture(tmp, b, f):
    d = write_checkpoint(tmp / "gpt2", {"h.0.attn.c_attn.weight": torch.ones(16, 48)}, {"model_type": "gpt2"})
    return [str(b), str(d)]


def _bad_adapter_config(tmp, b, f):
    d = tmp / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text('{"peft_type": "LORA", "r": ')
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(2, 16)},
              str(d / "adapter_model.safetensors"))
    return [str(b), str(d)]


def _fifo(tmp, b, f):
    os.mkfifo(tmp / "pipe.safetensors")   # opening it to read would block forever
    return [str(b), str(tmp / "pipe.safetensors")]


def _fifo_shard(tmp, b, f):
    (f / "model.safetensors").unlink()
    os.mkfifo(f / "model.safetensors")
    return [str(b), str(f)]


def _out_is_directory(tmp, b, f):
    return [str(b), str(f), "--out", str(tmp)]


def _out_under_a_file(tmp, b, f):
    (tmp / "afile").write_text("x")
    return [str(b), str(f), "--out", str(tmp / "afile" / "report.html")]


CASES = {
    "nonexistent base": (lambda tmp, b, f: [str(tmp / "nope"), str(f)], "nope: no such file or directory"),
    "nonexistent fine-tuned": (lambda tmp, b, f: [str(b), str(tmp / "nope")], "nope: no such file or directory"),
    "a device as base": (lambda tmp, b, f: [os.devnull, str(f)], "null: not a regular file or directory"),
    "a fifo": (_fifo, "pipe.safetensors: not a regular file or directory"),
    "a fifo as shard": (_fifo_shard, "model.safetensors: not a valid safetensors file (not a regular file)"),
    "no safetensors": (lambda tmp, b, f: [str(b), str((tmp / "empty").mkdir() or tmp / "empty")],
                       "no .safetensors files"),
    "pickles only": (_pickles_only, "pytorch_model.bin); dora-diag never unpickles"),
    "a .pt file": (_pt_file, "never unpickles untrusted files. Convert to safetensors"),
    "truncated shard": (_truncated, "truncated?"),
    "corrupt header": (_garbage_header, "header is not valid JSON"),
    "oversized header": (_oversized_header, "exceeds"),
    "index names a missing shard": (_missing_shard, "points at missing shard model-00009"),
    "index names a missing tensor": (_missing_tensor, "is missing from its shard"),
    "index points outside the directory": (_shard_outside, "lies outside the checkpoint directory"),
    "tensor in two shards": (_duplicate_tensor, "appears in two shards (one.safetensors and two.safetensors)"),
    "gptq": (_quantized({"quant_method": "gptq", "bits": 4}), "quantized checkpoint (gptq)"),
    "awq": (_quantized({"quant_method": "awq", "bits": 4}), "quantized checkpoint (awq)"),
    "bitsandbytes": (_quantized({"load_in_4bit": True}), "quantized checkpoint (bitsandbytes)"),
    "packed without config": (_packed_without_config, "quantized checkpoint (GPTQ/AWQ"),
    "integer base": (_integer_base, "no floating-point weight matrix to compare (non-float dtypes I8)"),
    "different architectures": (_other_architecture, "are they the same architecture?"),
    "broken adapter config": (_bad_adapter_config, "adapter_config.json is not valid JSON"),
    "--out is a directory": (_out_is_directory, "is a directory"),
    "--out under a file": (_out_under_a_file, "does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line(case, pair, tmp_path, capsys):
    make, message = CASES[case]
    b, f = pair
    code, out, err = call(capsys, "compare", *make(tmp_path, b, f), *_outputs(tmp_path))
    assert_one_line_error(code, err, message)
    assert not list((tmp_path / "out").iterdir()), "outputs or temp files were left behind"
    assert not (tmp_path / "UNPICKLED").exists(), "a pickle was loaded"


@pytest.mark.parametrize("case", ["nonexistent fine-tuned", "pickles only", "truncated shard", "gptq"])
def test_check_refuses_the_same_inputs(case, pair, tmp_path, capsys):
    make, message = CASES[case]
    b, f = pair
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = call(capsys, "check", *make(tmp_path, b, f), "--json", str(out / "v.json"))
    assert_one_line_error(code, err, message)
    assert not list(out.iterdir())


def _odd_pair(tmp: Path) -> tuple[Path, Path, dict, dict]:
    """Every odd-but-usable tensor at once: NaN, Inf, fp8 (both kinds), non-float, resized vocab,
    a shape mismatch, an empty and an all-zero tensor, on top of three clean layers."""
    g = torch.Generator().manual_seed(0)
    base = {Q.format(i): torch.randn(8, 16, generator=g) for i in range(3)}
    base.update({f"model.layers.{i}.self_attn.k_proj.weight": torch.randn(8, 16, generator=g) for i in range(3)})
    base.update({
        "model.layers.0.self_attn.v_proj.weight": torch.randn(8, 16, generator=g).to(torch.float8_e4m3fn),
        "model.layers.1.self_attn.v_proj.weight": torch.randn(8, 16, generator=g).to(torch.float8_e5m2),
        "model.layers.0.mlp.up_proj.weight": torch.randint(-5, 5, (8, 16), generator=g, dtype=torch.int8),
        "model.embed_tokens.weight": torch.randn(20, 16, generator=g),
        "model.layers.0.mlp.down_proj.weight": torch.randn(16, 8, generator=g),
        "model.layers.0.mlp.gate_proj.weight": torch.zeros(0, 16),
        "model.layers.1.mlp.gate_proj.weight": torch.zeros(8, 16),
    })
    ft = {k: v if not v.is_floating_point() or v.numel() == 0 else
          (v.float() + 0.05 * torch.randn(v.shape, generator=g)).to(v.dtype) for k, v in base.items()}
    ft[Q.format(0)][2, 3] = float("nan")
    ft["model.layers.1.self_attn.k_proj.weight"][0, 0] = float("inf")
    ft["model.layers.0.mlp.up_proj.weight"] = torch.randn(8, 16, generator=g)            # float vs int8 base
    ft["model.embed_tokens.weight"] = torch.cat([ft["model.embed_tokens.weight"], torch.randn(4, 16, generator=g)])
    ft["model.layers.0.mlp.down_proj.weight"] = torch.randn(16, 9, generator=g)          # not a resize
    ft["model.layers.2.self_attn.k_proj.weight"] = torch.randint(0, 3, (8, 16), generator=g, dtype=torch.int8)
    ft["model.layers.1.mlp.gate_proj.weight"] = torch.zeros(8, 16)
    cfg = {"model_type": "llama"}
    return write_checkpoint(tmp / "b", base, cfg), write_checkpoint(tmp / "f", ft, cfg), base, ft


NON_FINITE_TEXT = r"(?i)[+-]?(nan|inf|infinity)"


def _refuse(constant: str):
    raise AssertionError(f"{constant} in the JSON")


def test_odd_tensors_exit_0_flagged_and_warned(tmp_path, capsys):
    b, f, base, ft = _odd_pair(tmp_path)
    csv, js = tmp_path / "t.csv", tmp_path / "s.json"
    code, _, err = call(capsys, "compare", str(b), str(f), "--csv", str(csv), "--json", str(js))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("dora-diag: warning: ") for line in warnings), err
    assert any("NaN/Inf" in w and "q_proj" in w and "k_proj" in w for w in warnings), err
    assert any("resized 20->24 rows" in w for w in warnings), err
    assert any("2 tensor(s) not compared" in w and "shape mismatch" in w and "non-float dtype I8" in w
               for w in warnings), err

    t = pd.read_csv(csv, keep_default_na=False, dtype=str).set_index("tensor")
    assert not t.apply(lambda col: col.str.fullmatch(NON_FINITE_TEXT)).any().any()
    assert t.loc[Q.format(0), "flags"] == "nonfinite"
    assert t.loc["model.layers.1.self_attn.k_proj.weight", "flags"] == "nonfinite"
    assert t.loc["model.layers.1.mlp.gate_proj.weight", "flags"] == "all channels zero"
    # The NaN row of q_proj is left out of the mean; the other rows match the reference.
    keep = [i for i in range(8) if i != 2]
    ref = reference_changes(base[Q.format(0)][keep], ft[Q.format(0)][keep])
    assert float(t.loc[Q.format(0), "delta_d"]) == pytest.approx(ref["delta_d"], rel=1e-4)
    # fp8 weights are upcast exactly: the reference on the upcast values.
    for i in (0, 1):
        name = f"model.layers.{i}.self_attn.v_proj.weight"
        ref = reference_changes(base[name].float(), ft[name].float())
        assert float(t.loc[name, "delta_d"]) == pytest.approx(ref["delta_d"], rel=1e-4)
        assert float(t.loc[name, "delta_m"]) == pytest.approx(ref["delta_m"], rel=1e-4)

    doc = json.loads(js.read_text(), parse_constant=_refuse)
    reasons = {s["tensor"]: s["reason"] for s in doc["skipped"]}
    assert reasons["model.layers.0.mlp.gate_proj.weight"] == "empty tensor"
    assert reasons["model.layers.0.mlp.up_proj.weight"] == "non-float dtype I8"
    assert reasons["model.layers.2.self_attn.k_proj.weight"] == "fine-tuned tensor has non-float dtype I8"
    assert "shape mismatch" in reasons["model.layers.0.mlp.down_proj.weight"]
    assert doc["warnings"] == [w.removeprefix("dora-diag: warning: ") for w in warnings]
    fits = {s["module"]: s["n"] for s in doc["stats"]["by_module"]}
    assert fits["q_proj"] == 2 and fits["k_proj"] == 1   # nonfinite tensors are left out of the fits


def test_quiet_hides_warnings(tmp_path, capsys):
    b, f, _, _ = _odd_pair(tmp_path)
    code, out, err = call(capsys, "compare", str(b), str(f), "-q")
    assert code == 0 and err == "" and out == ""


def test_hostile_names_stay_on_one_line(tmp_path, capsys):
    """Names from a stranger's file cannot add lines or send terminal escapes."""
    name = "model.layers.0.self_attn.q_proj\n\x1b[2Jweight"
    w = torch.randn(4, 4)
    b = write_checkpoint(tmp_path / "b", {name: w})
    f = write_checkpoint(tmp_path / "f", {name: w.clone().fill_(float("nan"))})
    code, _, err = call(capsys, "compare", str(b), str(f))
    assert code == 0
    assert err.count("\n") == 1 and "q_proj\\n\\x1b[2Jweight" in err and "\x1b" not in err


def test_check_prints_the_same_warnings(tmp_path, capsys):
    b, f, _, _ = _odd_pair(tmp_path)
    js = tmp_path / "v.json"
    code, out, err = call(capsys, "check", str(b), str(f), "--json", str(js))
    assert code == 0, err
    warnings = [line.removeprefix("dora-diag: warning: ") for line in err.splitlines() if line.strip()]
    assert warnings and warnings == json.loads(js.read_text())["warnings"]
    assert any("NaN/Inf" in w for w in warnings)
