"""The training loop behind ``dora-diag train``: AdamW, linear warmup/decay, clipping, seeds,
``checkpoint-N/`` directories written atomically, ``metrics.jsonl`` and ``train_config.json``.

Run directory (Hugging Face Trainer layout, read back by ``dora_diag.compare``)::

    OUT/train_config.json         the resolved TrainConfig + measured sizes
    OUT/metrics.jsonl             {"step", "loss", "lr", "step_time_s", "peak_mem_mb"} and
                                  {"step", "eval_loss", "eval_accuracy", ...} records
                                  (peak_mem_mb: CUDA peak allocated, or the process peak RSS on CPU)
    OUT/base/                     builtin model only: the task-A base the run started from
    OUT/checkpoint-N/             full weights (ft) or a PEFT adapter, + trainer_state.json

Each checkpoint is written into ``.checkpoint-N.tmp`` and renamed, so an interrupt (Ctrl-C)
never leaves a half-written ``checkpoint-N``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..errors import InputError
from ..runtime import resolve_device
from ..outputs.atomic import write_atomic
from .config import TrainConfig
from ..adapters.inject import AdapterConfig, apply_adapters
from .loop import Setup, TrainProgress, evaluate, optimize, peak_memory_mb, threads_for, torch_threads
from .model import save_full_model
from ..adapters.nf4 import model_bytes, quantize_linears

def prepare_run_dir(out: str | os.PathLike) -> Path:
    """Create OUT, refusing one that already holds a run (no silent overwrite)."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p}: exists and is not a directory")
    if p.is_dir() and (any((p / n).exists() for n in ("metrics.jsonl", "train_config.json"))
                       or any(p.glob("checkpoint-*"))):
        raise InputError(f"{p}: already holds a training run; choose another output directory or remove it")
    p.mkdir(parents=True, exist_ok=True)
    for stale in p.glob(".checkpoint-*.tmp"):
        shutil.rmtree(stale)
    return p


def save_checkpoint(model: torch.nn.Module, cfg: TrainConfig, adapter: AdapterConfig | None,
                    run_dir: Path, step: int, base_path: str) -> Path:
    """Write ``checkpoint-{step}`` via a temp dir and a rename."""
    final, tmp = run_dir / f"checkpoint-{step}", run_dir / f".checkpoint-{step}.tmp"
    tmp.mkdir()
    try:
        if adapter is None:
            save_full_model(model, tmp)
        else:
            from ..adapters.peft_format import save_peft_adapter
            save_peft_adapter(model, adapter, tmp, base_model_name_or_path=base_path)
        write_atomic(tmp / "trainer_state.json", json.dumps({"global_step": step, "max_steps": cfg.steps}) + "\n")
        os.replace(tmp, final)
    except BaseException:  # includes KeyboardInterrupt: never leave a half checkpoint behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def setup_for(cfg: TrainConfig, run_dir: Path) -> Setup:
    """Model and data: the builtin base or a builtin model directory, else a Hugging Face model directory."""
    from .builtin import builtin_setup
    from .model import is_builtin_dir
    if cfg.model == "builtin" or is_builtin_dir(cfg.model):
        return builtin_setup(cfg.model, cfg.data, run_dir)
    from .hf import hf_setup
    return hf_setup(cfg.model, cfg.data, cfg.max_length, cfg.eval_fraction, cfg.seed)


def prepare_model(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> dict:
    """Quantize and wrap ``model`` in place as ``cfg`` says, move it to ``device``; returns the
    measured sizes for train_config.json."""
    measured = {"model_bytes_full": model_bytes(model)}
    if cfg.quantize:
        measured["quantized_modules"] = len(quantize_linears(model))
    adapter = cfg.adapter_config()
    if adapter is not None:
        measured["adapted_modules"] = apply_adapters(model, adapter)
    model.to(device)
    measured["model_bytes"] = model_bytes(model)
    measured["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    measured["total_params"] = sum(p.numel() for p in model.parameters())
    return measured


def train(cfg: TrainConfig, progress: TrainProgress | None = None) -> Path:
    """Run one training job (defaults resolved, see TrainConfig); returns the run directory."""
    cfg = cfg.resolved()
    cfg.validate()
    run_dir = prepare_run_dir(cfg.out)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    setup = setup_for(cfg, run_dir)
    cfg = replace(cfg, threads=cfg.threads or threads_for(setup.model, device))
    with torch_threads(cfg.threads):
        measured = prepare_model(setup.model, cfg, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        write_atomic(run_dir / "train_config.json", json.dumps(
            {"config": asdict(cfg), "base": setup.base_path, "task": setup.train.kind,
             "train_examples": len(setup.train), "eval_examples": len(setup.eval),
             "device": str(device), "measured": measured}, indent=2) + "\n")
        run_loop(setup, cfg, device, run_dir, progress or TrainProgress())
    return run_dir


def run_loop(setup: Setup, cfg: TrainConfig, device: torch.device, run_dir: Path, progress: TrainProgress) -> None:
    """Train ``setup.model`` (prepared), logging to metrics.jsonl and saving checkpoints."""
    model, adapter = setup.model, cfg.adapter_config()
    log: list[dict] = []
    window: list[tuple[float, float]] = []

    def record(entry: dict) -> None:
        log.append(entry)
        write_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in log))

    def on_step(step: int, loss: float, lr: float, seconds: float) -> None:
        window.append((loss, seconds))
        progress.step(step, loss)
        if step % cfg.log_every == 0 or step == cfg.steps:
            record({"step": step, "loss": sum(w[0] for w in window) / len(window), "lr": lr,
                    "step_time_s": sum(w[1] for w in window) / len(window),
                    "peak_mem_mb": peak_memory_mb(device)})
            window.clear()
        if step % cfg.save_every == 0 or step == cfg.steps:
            record({"step": step, **evaluate(model, setup.eval, cfg.batch_size, device)})
            save_checkpoint(model, cfg, adapter, run_dir, step, setup.base_path)

    record({"step": 0, **evaluate(model, setup.eval, cfg.batch_size, device)})
    progress.start(cfg.steps)
    try:
        optimize(model, setup.train, cfg, device, on_step)
    finally:
        progress.finish()


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of the metrics.jsonl that ``train`` wrote into ``run_dir`` (our own file,
    read back right after the run: no untrusted-log limits needed)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read the training log ({e})") from None


def eval_history(run_dir: Path) -> list[dict]:
    """The eval records ({"step", "eval_loss", "eval_accuracy", ...}) of a run, by step: step 0
    is the model before training."""
    evals = [r for r in read_metrics(run_dir) if "eval_loss" in r]
    if not evals:
        raise InputError(f"{run_dir}: the run logged no evaluation")
    return evals


def final_eval(run_dir: Path) -> dict[str, float]:
    """The eval_* metrics of a run's last evaluation."""
    return {k: v for k, v in eval_history(run_dir)[-1].items() if k.startswith("eval_")}
