"""A stderr progress bar over bytes streamed, hidden with --quiet or when stderr is no TTY."""

from __future__ import annotations

import sys

import click


class BarProgress:
    """``analysis.compare.Progress`` as a progress bar over bytes."""

    def __init__(self, label: str, enabled: bool = True):
        self.label, self.enabled = label, enabled and sys.stderr.isatty()
        self.bar = None
        self.done = self.total_tensors = 0

    def start(self, total_bytes: int, total_tensors: int) -> None:
        if self.enabled:
            self.total_tensors = total_tensors
            self.bar = click.progressbar(length=total_bytes, label=self.label, file=sys.stderr,
                                         item_show_func=lambda _: f"{self.done}/{self.total_tensors} tensors")
            self.bar.__enter__()

    def advance(self, nbytes: int) -> None:
        if self.bar is not None:
            self.bar.update(nbytes)

    def tensor_done(self, name: str) -> None:
        self.done += 1

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
