"""Command group, shared options and the error policy (exit 2 for bad input, 1 for bugs)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback

import click

from .. import __version__
from ..errors import InputError, TrainingError
from .messages import error, one_line


INTERRUPTED = "dora-diag: interrupted; no partial output files were left behind"
TERMINATED = "dora-diag: terminated (SIGTERM); no partial output files were left behind"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dora-diag")
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug lines (for bug reports).")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """How did fine-tuning change my weights, and will DoRA help?

    Measures the DoRA paper's weight decomposition (magnitude change ΔM, direction change ΔD
    per output channel) between a base checkpoint and fine-tuned checkpoints or adapters.
    """
    ctx.obj = {"debug": debug}
    if debug:
        _debug_lines_on_stderr()


class _DebugToStderr(logging.Handler):
    """Writes to the stderr of the moment (click's test runner swaps it per invocation)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"dora-diag: debug: {one_line(self.format(record))}", err=True)


def _debug_lines_on_stderr() -> None:
    """``--debug`` also shows the library's debug lines (e.g. which block kernel runs)."""
    logger = logging.getLogger("dora_diag")
    logger.setLevel(logging.DEBUG)
    if not any(isinstance(h, _DebugToStderr) for h in logger.handlers):
        logger.addHandler(_DebugToStderr())


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs (temporary files, checkpoints)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def _on_sigterm(handler):
    """Install ``handler`` for SIGTERM (only the main thread may); returns the previous one."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> None:
    argv = _debug_first(list(argv if argv is not None else sys.argv[1:]))
    debug = argv[:1] == ["--debug"]
    previous = _on_sigterm(_raise_terminated)
    try:
        cli.main(args=argv, prog_name="dora-diag", standalone_mode=False)
    except click.exceptions.Abort as e:   # click turns KeyboardInterrupt (and so Terminated) into Abort
        terminated = isinstance(e.__cause__, Terminated)
        click.echo(TERMINATED if terminated else INTERRUPTED, err=True)
        sys.exit(143 if terminated else 130)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except InputError as e:
        if debug:
            traceback.print_exc()
        error(str(e))
        sys.exit(2)
    except TrainingError as e:
        if debug:
            traceback.print_exc()
        click.echo(f"dora-diag: training failed: {one_line(str(e))}", err=True)
        sys.exit(1)
    except Terminated:
        click.echo(TERMINATED, err=True)
        sys.exit(143)
    except KeyboardInterrupt:
        click.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except OSError as e:
        if e.filename is None:   # not about a path the user gave: a bug of ours
            _internal(e, debug)
        if debug:
            traceback.print_exc()
        error(f"{e.filename}: {e.strerror or e}")
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - last-resort handler: one line unless --debug
        _internal(e, debug)
    finally:
        if previous is not None:
            _on_sigterm(previous)


def _internal(e: Exception, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    else:
        click.echo(f"dora-diag: internal error: {type(e).__name__}: {one_line(str(e))} "
                   "(rerun with --debug for the traceback)", err=True)
    sys.exit(1)


def _debug_first(argv: list[str]) -> list[str]:
    """``--debug`` is the group's option; accept it after the subcommand too (before a ``--``)."""
    cut = argv.index("--") if "--" in argv else len(argv)
    if "--debug" not in argv[:cut]:
        return argv
    return ["--debug"] + [a for a in argv[:cut] if a != "--debug"] + argv[cut:]


def _register() -> None:
    from .check import check_cmd
    from .compare import compare_cmd
    from .demo import demo_cmd
    from .train import train_cmd
    from .verify import verify_cmd

    for command in (compare_cmd, check_cmd, verify_cmd, train_cmd, demo_cmd):
        cli.add_command(command)


_register()
