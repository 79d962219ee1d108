"""``--executor`` on compare, check and verify: a one-line exit 2 without Ray; with Ray (started by the
command itself on this machine) the same CSV and JSON as the local executor."""

from __future__ import annotations

import json
import sys

import pytest

from cli_helpers import assert_one_line_error, call

VARIABLE = ("elapsed_s", "executor", "bytes_read")


@pytest.mark.parametrize("command", ["compare", "check", "verify"])
def test_without_ray_the_ray_executor_is_a_one_line_error(make_pair, capsys, monkeypatch, command):
    b, f, _, _ = make_pair()
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray raises ImportError
    code, out, err = call(capsys, command, str(b), str(f), "--executor", "ray")
    assert_one_line_error(code, err, 'needs Ray: pip install "dora-diag[ray]"')


def _doc(path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in VARIABLE}


@pytest.mark.slow
def test_ray_outputs_equal_local_outputs(make_pair, tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray", reason='needs the "ray" extra (pip install "dora-diag[ray]")')
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    b, f, _, _ = make_pair()
    outputs = {}
    for executor in ("local", "ray"):
        csv, js, verdicts = (tmp_path / f"{executor}.{x}" for x in ("csv", "json", "check.json"))
        # `local`: a Ray of this test's own, never a cluster something else started with `ray start`
        where = ("--executor", executor, "--ray-address", "local")
        code, _, err = call(capsys, "compare", str(b), f"FT={f}", "-q", "--csv", str(csv), "--json", str(js),
                            *where, "--task-mb", "0.001", "--block-mb", "0.001")
        assert code == 0, err
        code, _, err = call(capsys, "check", str(b), f"FT={f}", "-q", "--json", str(verdicts), *where)
        assert code == 0, err
        outputs[executor] = (csv.read_bytes(), _doc(js), _doc(verdicts), json.loads(js.read_text())["executor"])
    assert outputs["ray"][:3] == outputs["local"][:3]
    assert outputs["ray"][3]["kind"] == "ray" and outputs["ray"][3]["tasks"] > 6


def test_an_unreachable_ray_address_is_a_one_line_error(make_pair, capsys, tmp_path):
    pytest.importorskip("ray", reason='needs the "ray" extra (pip install "dora-diag[ray]")')
    b, f, _, _ = make_pair()
    code, _, err = call(capsys, "compare", str(b), str(f), "--json", str(tmp_path / "s.json"),
                        "--executor", "ray", "--ray-address", "127.0.0.1:1")
    assert_one_line_error(code, err, "cannot reach the Ray cluster at 127.0.0.1:1")
    assert not (tmp_path / "s.json").exists()
