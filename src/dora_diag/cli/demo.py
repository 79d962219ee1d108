"""``dora-diag demo``."""

from __future__ import annotations

import click

from ..options import DEMO_SAVE_EVERY, DEMO_SEEDS, DEMO_STEPS
from .progress import BarProgress
from .train import TrainBar


@click.command("demo")
@click.option("--out", type=click.Path(), default="reports/demo.html", show_default=True,
              help="Write the HTML report here.")
@click.option("--runs-dir", type=click.Path(), default=None,
              help="Keep the training runs here, in seedK/{ft,lora,dora} (default: a temporary directory, "
                   "removed afterwards).")
@click.option("--model", default="builtin", show_default=True,
              help="'builtin' (the cached task-A base) or a builtin model directory to start from.")
@click.option("--steps", type=int, default=DEMO_STEPS, show_default=True, help="Training steps per method.")
@click.option("--save-every", type=int, default=DEMO_SAVE_EVERY, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="The first seed; its runs make the report.")
@click.option("--seeds", type=int, default=DEMO_SEEDS, show_default=True,
              help="Train every method with this many seeds; the summary gives the median and range over them.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output; the summary is still printed.")
def demo_cmd(out, model, runs_dir, steps, save_every, seed, seeds, quiet):
    """Train FT, LoRA and DoRA on the builtin task shift (nothing downloaded) with --seeds seeds,
    compare each seed's runs with the base, print the median and range over seeds, and write the
    first seed's report. About 75 s of one CPU core for 3 seeds, plus ~20 s the first time, to
    build the base (reports/demo.md, benchmarks/bench_demo.py)."""
    from ..demo import DemoConfig, run_demo

    cfg = DemoConfig(out=out, model=model, runs_dir=runs_dir, steps=steps, save_every=save_every, seed=seed,
                     seeds=seeds)
    result = run_demo(cfg, progress_for=lambda label: TrainBar(label, enabled=not quiet),
                      compare_progress=BarProgress("comparing", not quiet),
                      status=None if quiet else (lambda text: click.echo(text, err=True)))
    click.echo(f"report: {result.report}")
    for line in result.lines():
        click.echo(line)
    click.echo("paper (VL-BART, Q): FT -0.62, LoRA +0.83, DoRA -0.31")
