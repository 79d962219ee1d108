"""Training logs of a run: dora-diag's ``metrics.jsonl`` or HF's ``trainer_state.json`` ``log_history``.

A log is informative only: a bad line or an absurd value is left out with a warning, never the
end of the run. What is kept is bounded whatever the file holds: lines longer than
``MAX_LINE_BYTES`` are skipped, each record keeps at most ``MAX_FIELDS`` scalar fields (nested
values are dropped, so no record can be too deep to write back out), and a log longer than
``MAX_RECORDS`` is thinned to every k-th record, evenly over the whole run.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .json_limits import load_json_file, parse_json

MAX_LINE_BYTES = 64 << 10
MAX_RECORDS = 10_000
MAX_FIELDS = 64
MAX_KEY_CHARS = 100
MAX_STRING_CHARS = 200
INT64 = 1 << 63


class LogReader:
    """Collects records with an in-range integer ``step``, thinning as it goes; ``warnings``
    says what was left out."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.records: list[dict] = []
        self.stride, self._seen = 1, 0
        self.bad: list[str] = []

    def add(self, record: object) -> None:
        if not isinstance(record, dict):
            return
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            return
        if not 0 <= step < INT64:
            self.bad.append(f"step {step}" if len(str(step)) < 30 else "a step out of range")
            return
        self._seen += 1
        if (self._seen - 1) % self.stride:
            return
        self.records.append(_scalars(record))
        if len(self.records) > MAX_RECORDS:
            self.records, self.stride = self.records[::2], self.stride * 2

    def warnings(self) -> list[str]:
        out = []
        if self.bad:
            out.append(f"{self.where}: {len(self.bad)} log record(s) left out ({'; '.join(self.bad[:3])})")
        if self.stride > 1:
            out.append(f"{self.where}: {self._seen} log records, kept one in {self.stride} "
                       f"(at most {MAX_RECORDS} are kept)")
        return out


def _scalars(record: dict) -> dict:
    """The record's short scalar fields: numbers (integers within int64), booleans, short strings."""
    out = {}
    for key, value in record.items():
        if len(out) == MAX_FIELDS:
            break
        if len(key) > MAX_KEY_CHARS:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
            continue
        if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            continue
        if value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
    return out


def read_jsonl(path: Path, log: LogReader) -> None:
    """Every line of ``path`` into ``log``, one bounded line at a time."""
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(_lines(f), 1):
                if line is None:
                    log.bad.append(f"line {number} is over {MAX_LINE_BYTES} bytes")
                    continue
                if not line.strip():
                    continue
                try:
                    log.add(parse_json(line, path, f"line {number}"))
                except InputError as e:
                    log.bad.append(str(e).removeprefix(f"{path}: "))
    except OSError as e:
        raise InputError(f"{path}: cannot read the training log ({e.strerror or e})") from None


def _lines(f):
    """Lines of a binary file, each at most ``MAX_LINE_BYTES`` (None for a longer one, skipped)."""
    while True:
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):   # skip the rest of the long line
                line = f.readline(MAX_LINE_BYTES)
            yield None
        else:
            yield line


def read_log_history(state: Path, log: LogReader) -> None:
    """``log_history`` of a trainer_state.json into ``log``; an unreadable file is a warning."""
    try:
        doc = load_json_file(state, "trainer_state.json")
    except InputError as e:
        log.bad.append(str(e).removeprefix(f"{state}: "))
        return
    history = doc.get("log_history") if isinstance(doc, dict) else None
    for record in history if isinstance(history, list) else []:
        log.add(record)
