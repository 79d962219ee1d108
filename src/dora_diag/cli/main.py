"""Command group, shared options and the error policy (exit 2 for bad input, 1 for bugs)."""

from __future__ import annotations

import sys
import traceback

import click

from .. import __version__
from ..errors import InputError
from .messages import error, one_line


INTERRUPTED = "dora-diag: interrupted; no partial output files were left behind"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dora-diag")
@click.option("--debug", is_flag=True, help="Show full tracebacks (for bug reports).")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """How did fine-tuning change my weights, and will DoRA help?

    Measures the DoRA paper's weight decomposition (magnitude change ΔM, direction change ΔD
    per output channel) between a base checkpoint and fine-tuned checkpoints or adapters.
    """
    ctx.obj = {"debug": debug}


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="dora-diag", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except InputError as e:
        if debug:
            traceback.print_exc()
        error(str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - last-resort handler: one line unless --debug
        if debug:
            traceback.print_exc()
        else:
            click.echo(f"dora-diag: internal error: {type(e).__name__}: {one_line(str(e))} "
                       "(rerun with --debug for the traceback)", err=True)
        sys.exit(1)


# Subcommands register themselves on ``cli`` when imported.
from . import compare  # noqa: E402,F401
from . import check  # noqa: E402,F401
from . import train, demo  # noqa: E402,F401
