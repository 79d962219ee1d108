"""Exceptions that map to the CLI's exit codes.

``InputError`` is the user's problem (bad path, corrupt file, unsupported format): the CLI
prints its message as one line on stderr and exits with 2. Anything else is our bug (exit 1).
"""


class InputError(Exception):
    """Bad input or usage: reported as one line, exit code 2."""


class UnsupportedError(InputError):
    """A well-formed input that dora-diag does not handle (yet)."""
