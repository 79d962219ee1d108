"""What the CLI prints besides the progress bar: errors and warnings on stderr, summaries on
stdout, one line each.

Names come from files written by strangers; control characters (newlines, terminal escapes)
and undecodable bytes of file names are shown escaped, on every stream, so that a message
stays one line and cannot rewrite the terminal.
"""

from __future__ import annotations

import click

from ..outputs.text import escape_char


def one_line(text: str) -> str:
    return "".join(c if c.isprintable() else escape_char(c) for c in text)


def echo(text: str) -> None:
    """One line on stdout, escaped like everything else the CLI prints."""
    click.echo(one_line(text))


def error(text: str) -> None:
    click.echo(f"dora-diag: error: {one_line(text)}", err=True)


def print_warnings(analysis, quiet: bool) -> None:
    """``analysis.meta.warnings`` on stderr, unless ``quiet``."""
    if not quiet:
        for w in analysis.meta.warnings:
            click.echo(f"dora-diag: warning: {one_line(w)}", err=True)
