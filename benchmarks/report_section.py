"""Replace one benchmark's section of reports/benchmarks.md, leaving the others intact."""

from __future__ import annotations

import sys
from pathlib import Path

from dora_diag.outputs.atomic import write_atomic

REPORT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks.md"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(name: str, body: str) -> None:
    """``body`` is the markdown between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = markers(name)
    section = f"{start}\n{body.strip()}\n{end}"
    REPORT.parent.mkdir(exist_ok=True)
    text = REPORT.read_text(encoding="utf-8") if REPORT.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    write_atomic(REPORT, text)


def command_line() -> str:
    """The command that ran this benchmark, as its report section names it."""
    return "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])


def publish(name: str, text: str, write: bool = True) -> None:
    """Print a benchmark's section and, unless ``write`` is False (``--no-write``), put it in the report."""
    print(text)
    if write:
        write_section(name, text)
