"""``dora-diag check``: the "will DoRA help?" verdict after a short LoRA run."""

from __future__ import annotations

import math

import click

from ..options import AXES, DEVICES
from ..outputs.atomic import check_writable
from .main import cli
from .messages import print_warnings
from .progress import BarProgress


def _fmt(x: float, spec: str) -> str:
    return "n/a" if x is None or math.isnan(x) else format(x, spec)


def stat_line(label: str, s: dict) -> str:
    """``q_proj  n=12  r=+0.83  p=0.001  95% CI [+0.49, +0.95]``"""
    ci = "" if math.isnan(s["ci_low"]) else f"  95% CI [{s['ci_low']:+.2f}, {s['ci_high']:+.2f}]"
    return f"  {label:<24} n={s['n']:<4} r={_fmt(s['pearson_r'], '+.2f')}  p={_fmt(s['p_value'], '.2g')}{ci}"


def print_verdict(v: dict) -> None:
    click.echo(f"{v['run']} ({v['kind']}): {v['headline']}")
    click.echo(stat_line("pooled", v["pooled"]))
    for m in v["modules"]:
        click.echo(stat_line(m["module"], m))
    if v["decision"] != "inconclusive":
        click.echo(f"  why: {v['reason']}")
    click.echo(f"  note: {v['note']}")


@cli.command("check")
@click.argument("base", type=click.Path())
@click.argument("run", metavar="RUN")
@click.option("--out", type=click.Path(), help="Write the HTML report (with the verdict card) here.")
@click.option("--json", "json_", type=click.Path(), help="Write the verdict, statistics and inputs as JSON.")
@click.option("--min-r", type=float, default=0.3, show_default=True,
              help="Pooled Pearson r above which DoRA likely helps (with p < --alpha).")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Significance level for that r.")
@click.option("--min-points", type=int, default=6, show_default=True,
              help="Fewer (layer, checkpoint) points than this is inconclusive.")
@click.option("--axis", type=click.Choice(AXES), default="out", show_default=True,
              help="Channels: 'out' = output rows (DoRA/PEFT), 'in' = input columns (LyCORIS).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no printed verdict.")
def check_cmd(base, run, out, json_, min_r, alpha, min_points, axis, device, quiet):
    """Will DoRA help? The ΔD–ΔM correlation of RUN against BASE, with a decision.

    RUN is [LABEL=]PATH: a PEFT adapter directory, a run directory of checkpoint-N/ adapters,
    or a full fine-tuned run. Rule (pooled over module types): r > --min-r with p < --alpha:
    DoRA likely helps; r < 0: DoRA gain likely marginal; otherwise inconclusive.
    """
    from ..analysis.check import check as run_check

    for path in (out, json_):
        if path:
            check_writable(path)
    analysis = run_check(base, run, min_r=min_r, alpha=alpha, min_points=min_points, axis=axis, device=device,
                         progress=BarProgress("checking", not quiet))
    print_warnings(analysis, quiet)
    if json_:
        analysis.to_json(json_)
    if out:
        analysis.to_html(out)
    if not quiet:
        for v in analysis.meta["verdicts"]:
            print_verdict(v)
