"""``dora-diag compare``: outputs, exit codes and one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cli_helpers import call, run_cli, without_timings


def test_compare_writes_csv_and_json(make_pair, tmp_path, capsys):
    b, f, _, _ = make_pair()
    csv, js = tmp_path / "t.csv", tmp_path / "s.json"
    code, out, err = call(capsys, "compare", str(b), f"FT={f}", "--csv", str(csv), "--json", str(js))
    assert code == 0, err
    assert "q_proj" in out and "(pooled)" in out
    table = pd.read_csv(csv)
    for col in ("run", "step", "checkpoint", "tensor", "layer", "module", "rows", "cols", "dtype", "delta_m",
                "delta_d", "rel_delta_m", "zero_rows"):
        assert col in table.columns
    assert set(table["run"]) == {"FT"} and len(table) == 6
    doc = json.loads(js.read_text())
    assert doc["tool"] == "dora-diag" and doc["axis"] == "out" and doc["device"] == "cpu"
    assert {"skipped", "unmatched", "elapsed_s", "version", "runs", "stats", "bytes_read"} <= set(doc)
    assert any(s["module"] == "(pooled)" for s in doc["stats"]["by_module"])


def test_outputs_are_deterministic(make_pair, tmp_path, capsys):
    b, f, _, _ = make_pair()
    docs = []
    for i in range(2):
        csv, js = tmp_path / f"{i}.csv", tmp_path / f"{i}.json"
        assert call(capsys, "compare", str(b), str(f), "-q", "--csv", str(csv), "--json", str(js))[0] == 0
        docs.append((csv.read_bytes(), without_timings(js.read_text())))
    assert '"elapsed_s"' not in docs[0][1]
    assert docs[0] == docs[1]


@pytest.mark.parametrize("args,message", [
    (["compare", "{tmp}/missing", "{ft}"], "no such file or directory"),
    (["compare", "{base}", "{ft}", "--csv", "{tmp}/nodir/x.csv"], "does not exist"),
    (["compare", "{base}", "{ft}", "--json", "{tmp}"], "is a directory"),
    (["compare", "{base}", "{ft}", "--axis", "diag"], "Invalid value for '--axis'"),
    (["compare", "{base}"], "Missing argument"),
])
def test_bad_input_is_one_line_and_exit_2(make_pair, tmp_path, args, message):
    b, f, _, _ = make_pair()
    argv = [a.format(tmp=tmp_path, base=b, ft=f) for a in args]
    code, out, err = run_cli(*argv)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.glob("**/*.csv")) and not list(tmp_path.glob("*.json"))


def test_no_partial_outputs_when_input_is_bad(make_pair, tmp_path):
    b, _, _, _ = make_pair()
    code, _, err = run_cli("compare", str(b), str(tmp_path / "nothing"), "--csv", str(tmp_path / "t.csv"))
    assert code == 2 and "Traceback" not in err
    assert not (tmp_path / "t.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".t.csv")]


def test_debug_shows_the_traceback(make_pair, tmp_path):
    b, _, _, _ = make_pair()
    code, _, err = run_cli("--debug", "compare", str(b), str(tmp_path / "nothing"))
    assert code == 2 and "Traceback" in err


def test_help_and_version():
    code, out, _ = run_cli("compare", "--help")
    assert code == 0 and "--split-fused" in out and "[LABEL=]FINETUNED" in out
    code, out, _ = run_cli("--version")
    assert code == 0 and "dora-diag" in out


def test_compare_out_and_json_compute_each_fit_once(make_pair, tmp_path, capsys, monkeypatch):
    """The summary, the JSON and the HTML report read one computation: one layer-level estimate
    per (run, module type) row, one naive fit per module and layer row, the fit points filtered once."""
    from dora_diag.analysis import analysis, coupling, stats

    calls = {"estimate_all": 0, "fit": 0, "fit_points": 0}

    def counted(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)

    counted(coupling, "estimate_all")
    counted(stats, "fit")
    counted(analysis, "fit_points")
    b, f, _, _ = make_pair(layers=4)
    js, html = tmp_path / "s.json", tmp_path / "r.html"
    code, _, err = call(capsys, "compare", str(b), f"FT={f}", "--out", str(html), "--json", str(js))
    assert code == 0, err
    doc = json.loads(js.read_text())
    by_module, by_layer = doc["stats"]["by_module"], doc["stats"]["by_layer"]
    assert len(by_module) == 3 and len(by_layer) == 4 and all(r["units"] == 4 for r in by_module)
    assert calls == {"estimate_all": len(by_module), "fit": len(by_module) + len(by_layer), "fit_points": 1}
