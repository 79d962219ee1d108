"""Exceptions that map to the CLI's exit codes.

``InputError`` is the user's problem (bad path, corrupt file, unsupported format): the CLI
prints its message as one line on stderr and exits with 2. ``TrainingError`` is a run that
failed on its own (a diverging loss): one line, exit 1. Anything else is our bug (exit 1,
reported as an internal error).
"""


class InputError(Exception):
    """Bad input or usage: reported as one line, exit code 2."""


class UnsupportedError(InputError):
    """A well-formed input that dora-diag does not handle (yet)."""


class TrainingError(Exception):
    """Training failed although its inputs were valid (e.g. the loss diverged): one line, exit 1."""
