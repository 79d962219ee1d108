"""``dora-diag compare``."""

from __future__ import annotations

from dataclasses import dataclass

import click

from ..errors import InputError
from ..outputs.paths import check_outputs
from .executors import executor_kwargs, executor_options
from .messages import echo, print_warnings
from .progress import BarProgress
from .stream_options import stream_kwargs, stream_options


@dataclass
class CompareOptions:
    base: str
    finetuned: tuple[str, ...]
    out: str | None
    csv: str | None
    json: str | None
    axis: str
    device: str
    split_fused: bool
    quiet: bool
    block_mb: float


def _print_summary(analysis, by_expert: bool = False) -> None:
    """Per run and module type (and MoE expert with ``by_expert``): the paper's r and the
    detrended partial r with its layer-level p."""
    from ..analysis.verdict import coupling_text

    stats = analysis.stats("expert" if by_expert else "module")
    for run, g in stats.groupby("run", sort=False):
        echo(f"{run} ({g['method'].iloc[0]}):")
        for _, r in g.iterrows():
            label = f"{r['module']}[{r['expert']}]" if by_expert else r["module"]
            echo(f"  {label:<28} n={r['n']:<4} {coupling_text(r)}")


@click.command("compare")
@click.argument("base", type=click.Path())
@click.argument("finetuned", nargs=-1, required=True, metavar="[LABEL=]FINETUNED...")
@click.option("--out", type=click.Path(), help="Write the HTML report here.")
@click.option("--csv", type=click.Path(), help="Write the per-tensor table (one row per tensor per checkpoint).")
@click.option("--json", "json_", type=click.Path(), help="Write inputs, statistics, skipped/unmatched tensors.")
@stream_options
@click.option("--figures", type=click.Path(file_okay=False),
              help="Write every report figure into this directory as PNG and SVG (needs kaleido and Chromium).")
@executor_options
@click.option("--by-expert", is_flag=True, help="Summarise MoE experts one by one (the JSON has them as by_expert).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
def compare_cmd(base, finetuned, out, csv, json_, axis, device, split_fused, allow_partial, block_mb, figures,
                executor, ray_address, task_mb, by_expert, quiet):
    """Compare FINETUNED checkpoints (or run directories, or PEFT adapters) with BASE.

    BASE is a model directory (model.safetensors or shards with an index) or a .safetensors
    file. Each FINETUNED is [LABEL=]PATH; a run directory expands to its checkpoint-N folders.
    """
    from ..analysis.compare import compare as run_compare

    opts = CompareOptions(base, finetuned, out, csv, json_, axis, device, split_fused, quiet, block_mb)
    check_outputs({"--out": out, "--csv": csv, "--json": json_}, [base, *finetuned])
    if out and not out.lower().endswith((".html", ".htm")):
        raise InputError("--out: the report is HTML: name it .html (for a PDF print it from a browser; "
                         "--figures DIR writes PNG/SVG figures)")
    if figures:
        from ..report.export import check_renderer

        check_renderer()   # before the comparison, not after it
    analysis = run_compare(opts.base, *opts.finetuned, progress=BarProgress("comparing", not opts.quiet),
                           **stream_kwargs(axis, device, split_fused, allow_partial, block_mb),
                           **executor_kwargs(executor, ray_address, task_mb))
    print_warnings(analysis, opts.quiet)
    if opts.csv:
        analysis.to_csv(opts.csv)
    if opts.json:
        analysis.to_json(opts.json)
    if opts.out:
        analysis.to_html(opts.out)
        if not opts.quiet:
            echo(f"report written to {opts.out}")
    if figures:
        from ..report.figures import export_report_figures

        written = export_report_figures(analysis, figures)
        if not opts.quiet:
            echo(f"{len(written)} figure files written to {figures}")
    if not opts.quiet:
        _print_summary(analysis, by_expert)
