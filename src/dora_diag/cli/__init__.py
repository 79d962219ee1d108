"""The ``dora-diag`` command: a thin click layer over the library functions."""

from .main import cli, main

__all__ = ["cli", "main"]
