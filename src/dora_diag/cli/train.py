"""``dora-diag train``."""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import click

from ..methods import METHODS
from ..options import DEVICES, QUANTIZE
from ..train.config import DEFAULT_LR, SMALL_MODEL_PARAMS, WARMUP_FRACTION, TrainConfig

# One source for the defaults: TrainConfig's fields (torch-free module, so --help stays fast).
TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


class TrainBar:   # a train.trainer.TrainProgress
    """A stderr progress bar over a run's steps showing the current loss; hidden with --quiet or
    no TTY. Its length is ``steps`` when given up front, else the total that start() gets."""

    def __init__(self, label: str, steps: int | None = None, enabled: bool = True):
        self.label, self.steps, self.enabled = label, steps, enabled and sys.stderr.isatty()
        self.bar, self.loss = None, float("nan")

    def start(self, total_steps: int) -> None:
        if self.enabled:
            self.bar = click.progressbar(length=self.steps or total_steps, label=self.label, file=sys.stderr,
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


def _default(name: str):
    return TRAIN_DEFAULTS[name]


def _eval_text(record: dict) -> str:
    return "  ".join(f"{k.removeprefix('eval_')} {v:.4f}" for k, v in record.items() if k.startswith("eval_"))


@click.command("train")
@click.option("--method", type=click.Choice(list(METHODS)), default=_default("method"), show_default=True,
              help="; ".join(f"{m.name} = {m.help}" for m in METHODS.values()) + ".")
@click.option("--model", default=_default("model"), show_default=True,
              help="'builtin' (small torch transformer, base trained on task A), a builtin model "
                   "directory, or a local Hugging Face model directory (needs the 'hf' extra).")
@click.option("--data", default=_default("data"), show_default=True,
              help="'builtin' (task B) or a JSONL file: {\"text\"}, {\"prompt\",\"completion\"} "
                   "or {\"text\",\"label\"}.")
@click.option("--out", required=True, type=click.Path(), help="Run directory to create.")
@click.option("--rank", type=int, default=_default("rank"), show_default=True)
@click.option("--alpha", type=float, default=_default("alpha"), show_default=True)
@click.option("--dropout", type=float, default=_default("dropout"), show_default=True)
@click.option("--rslora", is_flag=True, help="Scale by alpha/sqrt(rank) instead of alpha/rank.")
@click.option("--targets", default=",".join(_default("targets")), show_default=True,
              help="Comma-separated module patterns (add the head, e.g. 'classifier', to train it too).")
@click.option("--magnitude-only", default=",".join(_default("magnitude_only")), show_default=True,
              help="Magnitude-only modules for --method dora-magnitude-only.")
@click.option("--steps", type=int, default=_default("steps"), show_default=True)
@click.option("--save-every", type=int, default=_default("save_every"), show_default=True)
@click.option("--log-every", type=int, default=_default("log_every"), show_default=True)
@click.option("--batch-size", type=int, default=_default("batch_size"), show_default=True)
@click.option("--lr", type=float, default=None,
              help=f"Learning rate [default: {DEFAULT_LR['adapter']:g} for adapter methods, {DEFAULT_LR['ft']:g} for ft].")
@click.option("--magnitude-lr-mult", type=float, default=_default("magnitude_lr_mult"), show_default=True,
              help="Learning-rate multiplier for DoRA magnitude vectors.")
@click.option("--weight-decay", type=float, default=_default("weight_decay"), show_default=True)
@click.option("--warmup-steps", type=int, default=None,
              help=f"Linear warmup steps [default: {WARMUP_FRACTION:.0%} of --steps].")
@click.option("--max-grad-norm", type=float, default=_default("max_grad_norm"), show_default=True,
              help="0 disables clipping.")
@click.option("--seed", type=int, default=_default("seed"), show_default=True)
@click.option("--quantize", type=click.Choice(QUANTIZE), default=None,
              help="Hold the frozen base in 4-bit NF4 (QLoRA/QDoRA).")
@click.option("--max-length", type=int, default=_default("max_length"), show_default=True,
              help="Token limit for JSONL data.")
@click.option("--eval-fraction", type=float, default=_default("eval_fraction"), show_default=True,
              help="Share of JSONL records held out for evaluation.")
@click.option("--device", type=click.Choice(DEVICES), default=_default("device"), show_default=True)
@click.option("--threads", type=int, default=None,
              help=f"torch CPU threads [default: 1 for models under {SMALL_MODEL_PARAMS / 1e6:g}M parameters, "
                   "where more threads only add overhead; else torch's default].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
def train_cmd(quiet: bool, targets: str, magnitude_only: str, rslora: bool, **options):
    """Fine-tune with full FT, LoRA, DoRA or a DoRA variant; write checkpoint-N/ folders that
    'dora-diag compare' and 'dora-diag check' read. Prints the eval metrics before and after."""
    from ..train.trainer import eval_history, train

    cfg = TrainConfig(targets=_patterns(targets), magnitude_only=_patterns(magnitude_only),
                      use_rslora=rslora, **options)
    try:
        run_dir = train(cfg, TrainBar(cfg.method, enabled=not quiet))
    except KeyboardInterrupt:
        last = last_checkpoint(cfg.out)
        click.echo(f"dora-diag: interrupted; last complete checkpoint: {last or 'none'}", err=True)
        sys.exit(130)
    if not quiet:
        evals = eval_history(run_dir)
        click.echo(f"eval before training:  {_eval_text(evals[0])}")
        click.echo(f"eval after {evals[-1]['step']} steps: {_eval_text(evals[-1])}")
        click.echo(f"run written to {run_dir} (last checkpoint {last_checkpoint(str(run_dir))})")
