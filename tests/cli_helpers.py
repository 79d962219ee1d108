"""Running the ``dora-diag`` CLI from tests (importable as ``cli_helpers``): in-process with
``call`` (fast: the CLI raises SystemExit), or as a real subprocess with ``run_cli``."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from dora_diag.cli import main


def run_cli(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "dora_diag", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return proc.returncode, proc.stdout, proc.stderr


def call(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def assert_one_line_error(code: int, err: str, message: str) -> None:
    """Exit 2 with exactly one non-empty stderr line that contains ``message``, no traceback."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("dora-diag: error: ") or lines[0].startswith("Error: "), err
    assert message in lines[0], err
    assert "Traceback" not in err


def without_timings(json_text: str) -> str:
    """A JSON output as text with its ``elapsed_s`` line removed: the rest must be byte-identical."""
    return re.sub(r'\n *"elapsed_s": [0-9.e+-]+,', "", json_text)
