"""Full training runs for the calibration, cached in a work directory.

A run lives in ``WORK/<setting>/<method>-seed<k>-<hash>``, the hash covering every TrainConfig
field, so a changed setting trains anew and an unchanged one is reused. A run counts as
finished when its last checkpoint exists (the trainer writes checkpoints atomically, last
after the final evaluation); anything else found there is a broken run and is trained again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
from pathlib import Path

from dora_diag.train.data import read_jsonl
from dora_diag.train.trainer import TrainConfig, train


def config_for(fields: dict, method: str, lr: float, seed: int, out: Path) -> TrainConfig:
    return TrainConfig(out=str(out), method=method, lr=lr, seed=seed, device="cpu", **fields)


def run_dir(work: Path, setting: str, fields: dict, method: str, lr: float, seed: int) -> Path:
    key = json.dumps({"method": method, "lr": lr, "seed": seed, **fields}, sort_keys=True, default=list)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return work / setting / f"{method}-seed{seed}-{digest}"


def finished(out: Path, steps: int) -> bool:
    return (out / f"checkpoint-{steps}").is_dir()


def train_cached(work: Path, setting: str, fields: dict, method: str, lr: float, seed: int, log) -> Path:
    """The finished run directory of (method, seed), training it first if needed."""
    out = run_dir(work, setting, fields, method, lr, seed)
    if finished(out, fields["steps"]):
        return out
    if out.exists():
        shutil.rmtree(out)  # an interrupted run: the trainer refuses to write into it
    log(f"training {setting} {method} seed {seed} -> {out}")
    train(config_for(fields, method, lr, seed, out))
    return out


def run_summary(out: Path) -> dict:
    """Final eval metrics and the median step time (s) of a finished run."""
    records = read_jsonl(out / "metrics.jsonl")
    evals = [r for r in records if "eval_loss" in r]
    times = [r["step_time_s"] for r in records if "step_time_s" in r]
    final = evals[-1]
    return {"step": final["step"], "eval_loss": final["eval_loss"], "eval_accuracy": final.get("eval_accuracy"),
            "step_time_s": statistics.median(times) if times else None}


def base_of(run: Path, model: str) -> str:
    """The base a run started from: the builtin run's own ``base/`` copy, else the model directory."""
    return str(run / "base") if (run / "base").is_dir() else model
