"""``dora-diag verify``: summary and one line per problem on stdout, JSON, exit codes 0 / 3 / 2."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

from cli_helpers import assert_one_line_error, call

pytest.importorskip("lycoris")
from tiny_lycoris import make_case  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return make_case(tmp_path_factory.mktemp("verify"), dora_wd=True)


def test_a_correct_merge_exits_0(case, tmp_path, capsys):
    js = tmp_path / "verify.json"
    code, out, err = call(capsys, "verify", str(case.base), str(case.merged), str(case.adapter), "--json", str(js))
    assert code == 0, err
    assert out.splitlines()[0].startswith("verify: ") and "problem" not in out
    doc = json.loads(js.read_text())
    assert doc["ok"] is True and doc["adapter_kind"] == "dora" and doc["counts"]["ok"] == len(doc["tensors"])


def test_a_dropped_module_exits_3_with_one_line(case, tmp_path, capsys):
    tensors = load_file(case.merged)
    name = "layers.1.conv.weight"
    tensors[name] = load_file(case.base)[name]
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken))
    js = tmp_path / "verify.json"
    code, out, _ = call(capsys, "verify", str(case.base), str(broken), str(case.adapter), "--json", str(js))
    assert code == 3
    problems = [line for line in out.splitlines() if line.startswith("  ")]
    assert problems == [f"  unchanged: {name}: equals the base although the adapter changes it: dropped in the merge"]
    assert json.loads(js.read_text())["problems"] == [problems[0].strip()]


def test_without_adapter_a_merge_equal_to_the_base_exits_3(case, capsys):
    code, out, _ = call(capsys, "verify", str(case.base), str(case.base))
    assert code == 3 and "nothing was merged" in out
    assert call(capsys, "verify", str(case.base), str(case.merged))[0] == 0


def test_quiet_prints_nothing(case, capsys):
    code, out, err = call(capsys, "verify", "-q", str(case.base), str(case.base))
    assert code == 3 and out == "" and err == ""


def test_bad_input_exits_2(case, tmp_path, capsys):
    code, _, err = call(capsys, "verify", str(case.base), str(tmp_path / "nope.safetensors"))
    assert_one_line_error(code, err, "no such file or directory")
    code, _, err = call(capsys, "verify", str(case.base), str(case.merged), "--json", str(tmp_path))
    assert_one_line_error(code, err, "is a directory")
