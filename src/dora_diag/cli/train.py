"""``dora-diag train``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..options import DEVICES, QUANTIZE, TRAIN_METHODS
from .main import cli


class BarTrainProgress:   # a train.trainer.TrainProgress
    """A stderr progress bar over steps showing the current loss; hidden with --quiet or no TTY."""

    def __init__(self, label: str, enabled: bool = True):
        self.label, self.enabled = label, enabled and sys.stderr.isatty()
        self.bar, self.loss = None, float("nan")

    def start(self, total_steps: int) -> None:
        if self.enabled:
            self.bar = click.progressbar(length=total_steps, label=self.label, file=sys.stderr,
                                         item_show_func=lambda _: f"loss {self.loss:.4f}")
            self.bar.__enter__()

    def step(self, step: int, loss: float) -> None:
        self.loss = loss
        if self.bar is not None:
            self.bar.update(1)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _patterns(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def last_checkpoint(run_dir: str) -> str | None:
    from ..io.runs import CHECKPOINT_DIR

    p = Path(run_dir)
    steps = sorted((int(m.group(1)), d.name) for d in p.glob("checkpoint-*") if (m := CHECKPOINT_DIR.match(d.name)))
    return str(p / steps[-1][1]) if steps else None


@cli.command("train")
@click.option("--method", type=click.Choice(TRAIN_METHODS), default="dora", show_default=True,
              help="ft = full fine-tuning; dora-magnitude-only = direction+magnitude on --targets, "
                   "magnitude only on --magnitude-only (the paper's reduced granularity).")
@click.option("--model", default="builtin", show_default=True,
              help="'builtin' (small torch transformer, base trained on task A), a builtin model "
                   "directory, or a local Hugging Face model directory (needs the 'hf' extra).")
@click.option("--data", default="builtin", show_default=True,
              help="'builtin' (task B) or a JSONL file: {\"text\"}, {\"prompt\",\"completion\"} "
                   "or {\"text\",\"label\"}.")
@click.option("--out", required=True, type=click.Path(), help="Run directory to create.")
@click.option("--rank", type=int, default=8, show_default=True)
@click.option("--alpha", type=float, default=16.0, show_default=True)
@click.option("--dropout", type=float, default=0.0, show_default=True)
@click.option("--rslora", is_flag=True, help="Scale by alpha/sqrt(rank) instead of alpha/rank.")
@click.option("--targets", default="q_proj,v_proj", show_default=True,
              help="Comma-separated module patterns (add the head, e.g. 'classifier', to train it too).")
@click.option("--magnitude-only", default="gate_proj,up_proj,down_proj", show_default=True,
              help="Magnitude-only modules for --method dora-magnitude-only.")
@click.option("--steps", type=int, default=300, show_default=True)
@click.option("--save-every", type=int, default=50, show_default=True)
@click.option("--log-every", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--magnitude-lr-mult", type=float, default=1.0, show_default=True,
              help="Learning-rate multiplier for DoRA magnitude vectors.")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--warmup-steps", type=int, default=0, show_default=True)
@click.option("--max-grad-norm", type=float, default=1.0, show_default=True, help="0 disables clipping.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quantize", type=click.Choice(QUANTIZE), default=None,
              help="Hold the frozen base in 4-bit NF4 (QLoRA/QDoRA).")
@click.option("--max-length", type=int, default=128, show_default=True, help="Token limit for JSONL data.")
@click.option("--eval-fraction", type=float, default=0.1, show_default=True,
              help="Share of JSONL records held out for evaluation.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
def train_cmd(quiet: bool, targets: str, magnitude_only: str, rslora: bool, **options):
    """Fine-tune with full FT, LoRA, DoRA or a DoRA variant; write checkpoint-N/ folders that
    'dora-diag compare' and 'dora-diag check' read."""
    from ..train.trainer import TrainConfig, train

    cfg = TrainConfig(targets=_patterns(targets), magnitude_only=_patterns(magnitude_only),
                      use_rslora=rslora, **options)
    try:
        run_dir = train(cfg, BarTrainProgress(cfg.method, not quiet))
    except KeyboardInterrupt:
        last = last_checkpoint(cfg.out)
        click.echo(f"dora-diag: interrupted; last complete checkpoint: {last or 'none'}", err=True)
        sys.exit(130)
    if not quiet:
        click.echo(f"run written to {run_dir} (last checkpoint {last_checkpoint(str(run_dir))})")
