"""Issue 13, causes 2, 8 and 9: user-supplied regular expressions, malformed safetensors that
the reference reader refuses, and numeric options, all through the CLI."""

from __future__ import annotations

import json
import signal
import struct

import pytest
import torch
from safetensors.torch import save_file

from cli_helpers import assert_one_line_error, call
from hostile_files import ADAPTER_KEY, adapter

# Patterns that backtrack catastrophically in ``re`` on some input; each must end in seconds.
EVIL = ["(\\w|\\w|\\w|.)*#", "(a|aa)+$", "(.*a){25}", "((q|q)*)*z", "(\\w+\\w+)+!", "([a-z._0-9]+)*\\(\\)"]


@pytest.fixture
def base(make_pair):
    return make_pair(layers=2, out=8, inp=16)[0]


def _factors(module: str = "q_proj") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {ADAPTER_KEY.format(i, "A").replace("q_proj", module): torch.randn(2, 16, generator=g) for i in range(2)} | {
        ADAPTER_KEY.format(i, "B").replace("q_proj", module): torch.randn(8, 2, generator=g) for i in range(2)}


class Hang(Exception):
    pass


def _call_within(capsys, seconds: int, *args: str):
    def alarm(signum, frame):
        raise Hang

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        return call(capsys, *args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("field", ["rank_pattern", "alpha_pattern", "trainable_token_indices"])
@pytest.mark.parametrize("pattern", EVIL)
def test_pathological_patterns_end_in_seconds(field, pattern, base, tmp_path, capsys):
    value = {pattern: [0]} if field == "trainable_token_indices" else {pattern: 4}
    ad = adapter(tmp_path / "ad", _factors(), **{field: value})
    code, _, err = _call_within(capsys, 20, "compare", str(base), str(ad), "-q")
    assert code in (0, 2) and "internal error" not in err, err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err


def _rewrite_header(path, mutate):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = mutate(header, raw[8 + n:])
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def _three_tensors(d):
    save_file({f"t{i}": torch.full((2, 4), float(i)) for i in range(3)}, str(d / "model.safetensors"))


def _same_offsets(h, data):
    for k in ("t1", "t2"):
        h[k]["data_offsets"] = h["t0"]["data_offsets"]
    return data


def _gap(h, data):
    for k in ("t1", "t2"):
        h[k]["data_offsets"] = [o + 4 for o in h[k]["data_offsets"]]
    return data + b"\0" * 4


def _overlap(h, data):
    h["t1"]["data_offsets"] = [o - 4 for o in h["t1"]["data_offsets"]]
    return data


def _trailing(h, data):
    return data + b"\0" * 16


MALFORMED = {
    "three tensors at the same offsets": (_same_offsets, "overlaps the tensor before it"),
    "a gap in the data section": (_gap, "leaves a gap of 4 bytes before it"),
    "overlapping tensors": (_overlap, "overlaps the tensor before it"),
    "bytes after the last tensor": (_trailing, "the tensors cover 96 of the 112 bytes"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_layouts_the_format_forbids_are_refused(case, tmp_path, capsys):
    mutate, message = MALFORMED[case]
    for side in ("b", "f"):
        (tmp_path / side).mkdir()
        _three_tensors(tmp_path / side)
    _rewrite_header(tmp_path / "f" / "model.safetensors", mutate)
    code, _, err = call(capsys, "compare", str(tmp_path / "b"), str(tmp_path / "f"), "-q")
    assert_one_line_error(code, err, message)


def test_a_duplicate_header_key_is_refused(tmp_path, capsys):
    """The second entry would silently win (and show up as a resized tensor)."""
    for side in ("b", "f"):
        (tmp_path / side).mkdir()
        save_file({"t": torch.ones(8, 4)}, str(tmp_path / side / "model.safetensors"))
    entry = '{"dtype": "F32", "shape": [%d, 4], "data_offsets": [%d, %d]}'
    header = ('{"t": ' + entry % (4, 0, 64) + ', "t": ' + entry % (4, 64, 128) + "}").encode()
    (tmp_path / "f" / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 128)
    code, _, err = call(capsys, "compare", str(tmp_path / "b"), str(tmp_path / "f"), "-q")
    assert_one_line_error(code, err, "key 't' appears twice in one object")


@pytest.mark.parametrize("shape_a,shape_b", [([16], [8, 2]), ([2, 16], [8]), ([], [8, 2])])
def test_factors_that_are_not_matrices_are_refused(shape_a, shape_b, base, tmp_path, capsys):
    factors = {ADAPTER_KEY.format(0, "A"): torch.ones(shape_a), ADAPTER_KEY.format(0, "B"): torch.ones(shape_b)}
    code, _, err = call(capsys, "compare", str(base), str(adapter(tmp_path / "ad", factors)), "-q")
    assert_one_line_error(code, err, "LoRA factors are floating-point matrices")


OPTIONS = {
    "compare": [["--block-mb", v] for v in ("inf", "nan", "-inf", "0", "-1", "1e400", "2000", "x")],
    "check": [["--block-mb", "nan"], ["--min-r", "nan"], ["--min-r", "2"], ["--significance", "inf"],
              ["--significance", "0"], ["--significance", "1"], ["--min-units", "0"], ["--trial-seeds", "1"]],
}


@pytest.mark.parametrize("command,option", [(c, o) for c, opts in OPTIONS.items() for o in opts], ids=str)
def test_numeric_options_out_of_range_are_usage_errors(command, option, base, tmp_path, capsys):
    code, _, err = call(capsys, command, str(base), str(base), *option)
    assert code == 2, err
    assert "Invalid value for" in err and option[0] in err and "Traceback" not in err
