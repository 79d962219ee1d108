"""What the CLI prints on stderr besides the progress bar: errors and warnings, one line each.

Names come from files written by strangers; control characters (newlines, terminal escapes)
are shown escaped so that a message stays one line and cannot rewrite the terminal.
"""

from __future__ import annotations

import click


def one_line(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def error(text: str) -> None:
    click.echo(f"dora-diag: error: {one_line(text)}", err=True)


def print_warnings(analysis, quiet: bool) -> None:
    """``analysis.meta["warnings"]`` on stderr, unless ``quiet``."""
    if not quiet:
        for w in analysis.meta.get("warnings", []):
            click.echo(f"dora-diag: warning: {one_line(w)}", err=True)
