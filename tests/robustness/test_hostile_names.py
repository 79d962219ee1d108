"""Issue 13, causes 7 and 10: names that are not UTF-8 or carry terminal escapes. A directory
named with undecodable bytes works and is shown the same escaped way in every output; control
characters never reach stdout or stderr raw."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from ckpt_helpers import write_checkpoint
from cli_helpers import assert_one_line_error, call, run_cli
from hostile_files import raw_header

NON_UTF8 = [b"run-caf\xe9", b"\xff\xfe", b"mixed-\xc3\xa9-\xe9"]   # Latin-1, bare bytes, UTF-8 then Latin-1


def _shown(raw: bytes) -> str:
    """How outputs show a name: UTF-8 decoded, each undecodable byte as \\xNN."""
    return raw.decode("utf-8", "backslashreplace")


@pytest.mark.parametrize("raw", NON_UTF8, ids=lambda r: r.decode("latin-1"))
def test_a_non_utf8_run_directory_works_in_every_output(raw, make_pair, tmp_path):
    b, f, _, _ = make_pair(layers=2, out=8, inp=16)
    run = Path(os.fsdecode(bytes(tmp_path) + b"/" + raw))
    f.rename(run)
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = run_cli("compare", str(b), str(run), "--csv", str(out / "t.csv"), "--json", str(out / "s.json"),
                                "--out", str(out / "r.html"))
    assert code == 0, err
    label = _shown(raw)
    assert set(pd.read_csv(out / "t.csv", keep_default_na=False)["run"]) == {label}
    doc = json.loads((out / "s.json").read_text(encoding="utf-8"))
    assert doc["runs"][0]["label"] == label and doc["runs"][0]["path"].endswith(label)
    assert label in stdout and "\udce9" not in stdout
    (out / "r.html").read_text(encoding="utf-8")   # valid UTF-8 throughout


@pytest.mark.parametrize("escape", ["\\udc80", "\\ud800", "\\udfff", "\\ud83d"])
def test_a_tensor_name_with_a_lone_surrogate_is_refused_like_the_reference_reader(escape, make_pair, tmp_path, capsys):
    b, f, _, _ = make_pair(layers=1, out=4, inp=4)
    raw_header(f / "model.safetensors", ('{"x' + escape + '": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}')
               .encode(), 4)
    code, _, err = call(capsys, "compare", str(b), str(f), "-q")
    assert_one_line_error(code, err, "is not valid Unicode (a lone surrogate)")


HOSTILE = ["\x1b]0;PWNED\x07", "\x1b[2J", "\r\n", "\x9b31m", "\u202e"]


@pytest.mark.parametrize("text", HOSTILE, ids=repr)
def test_escapes_in_names_never_reach_stdout_raw(text, tmp_path, capsys):
    name = f"model.layers.0.self_attn.q{text}proj.weight"
    w = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    b = write_checkpoint(tmp_path / "b", {name: w})
    f = write_checkpoint(tmp_path / "f", {name: w + 0.01})
    code, out, err = call(capsys, "compare", str(b), f"run{text}={f}")
    assert code == 0, err
    for stream in (out, err):
        assert not any(not c.isprintable() and c != "\n" for c in stream), repr(stream)
    assert repr(text)[1:-1] in out   # the module name and the label, shown escaped


def test_check_output_is_escaped_too(tmp_path, capsys):
    name = "model.layers.{}.self_attn.q\x1b]0;PWNED\x07proj.weight"
    g = torch.Generator().manual_seed(0)
    base = {name.format(i): torch.randn(4, 4, generator=g) for i in range(3)}
    b = write_checkpoint(tmp_path / "b", base)
    f = write_checkpoint(tmp_path / "f", {k: v + 0.01 * torch.randn(4, 4, generator=g) for k, v in base.items()})
    code, out, err = call(capsys, "check", str(b), f"x\x1b[2J={f}")
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out and "\\x1b[2J" in out
