"""Training logs: bounded records, thinned evenly, bad lines counted, nothing nested kept."""

from __future__ import annotations

import json

from dora_diag.io.training_log import MAX_LINE_BYTES, MAX_RECORDS, LogReader, read_jsonl


def test_a_long_log_is_thinned_evenly_over_the_whole_run(tmp_path):
    log = LogReader(tmp_path)
    n = 5 * MAX_RECORDS + 123
    for step in range(n):
        log.add({"step": step, "loss": 1.0})
    steps = [r["step"] for r in log.records]
    assert len(steps) <= MAX_RECORDS and steps[0] == 0 and steps[-1] > n - 2 * log.stride
    assert {b - a for a, b in zip(steps, steps[1:])} == {log.stride}
    assert log.warnings() == [f"{tmp_path}: {n} log records, kept one in {log.stride} (at most {MAX_RECORDS} are kept)"]


def test_records_keep_short_scalar_fields_only(tmp_path):
    log = LogReader(tmp_path)
    log.add({"step": 1, "loss": 0.5, "ok": True, "name": "x", "nested": {"a": 1}, "list": [1], "long": "y" * 300,
             "huge": 10**30, "k" * 101: 1, "none": None})
    assert log.records == [{"step": 1, "loss": 0.5, "ok": True, "name": "x", "none": None}]


def test_records_without_a_usable_step_are_ignored_or_counted(tmp_path):
    log = LogReader(tmp_path)
    for record in ([1], {"loss": 1}, {"step": True}, {"step": 1.5}, {"step": -3}, {"step": 2**63}, {"step": 2**63 - 1}):
        log.add(record)
    assert [r["step"] for r in log.records] == [2**63 - 1]
    assert log.warnings() == [f"{tmp_path}: 2 log record(s) left out (step -3; step {2**63})"]


def test_jsonl_lines_are_read_one_bounded_line_at_a_time(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_bytes(b'{"step": 1}\n' + b'{"step": 2, "x": "' + b"z" * MAX_LINE_BYTES + b'"}\n' + b"not json\n\n"
                  + json.dumps({"step": 3}).encode())   # the last line has no newline
    log = LogReader(p)
    read_jsonl(p, log)
    assert [r["step"] for r in log.records] == [1, 3]
    (warning,) = log.warnings()
    assert "2 log record(s) left out (line 2 is over 65536 bytes; line 3 is not valid JSON" in warning
