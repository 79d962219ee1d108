"""The training loop's parts, shared by the trainer, the builtin base recipe and the Hugging Face
setup: what is trained (``Setup``), progress callbacks, the schedule, the loss, evaluation and
``optimize`` (AdamW, linear warmup/decay, clipping, seeded batch order)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..errors import TrainingError
from ..methods import method
from .config import SMALL_MODEL_PARAMS, TrainConfig
from .data import IGNORE, TaskData
from ..adapters.inject import param_groups


@dataclass
class Setup:
    """What ``train`` trains: the model, its data, and where its base weights live."""

    model: torch.nn.Module
    train: TaskData
    eval: TaskData
    base_path: str


class TrainProgress:
    """Callbacks for the loop; the CLI plugs a progress bar in here."""

    def start(self, total_steps: int) -> None: ...
    def step(self, step: int, loss: float) -> None: ...
    def finish(self) -> None: ...


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def forward_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], kind: str
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss, correct (n,) per example, counted (n,) per example) for one batch."""
    kwargs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**kwargs)
    logits = out if isinstance(out, torch.Tensor) else out.logits
    labels = batch["labels"]
    if kind == "classification":
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        return loss, (logits.argmax(-1) == labels).long(), torch.ones_like(labels)
    logits, labels = logits[:, :-1], labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                             ignore_index=IGNORE)
    counted = labels != IGNORE
    correct = (logits.argmax(-1) == labels) & counted
    return loss, correct.sum(1), counted.sum(1)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: TaskData, batch_size: int, device: torch.device) -> dict[str, float]:
    """eval_loss, eval_accuracy (tokens or examples), and eval_exact_match for causal LMs."""
    was_training = model.training
    model.eval()
    loss_sum = correct = counted = exact = 0.0
    for start in range(0, len(data), batch_size):
        batch = _to(data.batch(torch.arange(start, min(start + batch_size, len(data)))), device)
        loss, c, n = forward_loss(model, batch, data.kind)
        loss_sum += loss.item() * n.sum().item()
        correct, counted = correct + c.sum().item(), counted + n.sum().item()
        exact += ((c == n) & (n > 0)).sum().item()
    model.train(was_training)
    out = {"eval_loss": loss_sum / max(counted, 1), "eval_accuracy": correct / max(counted, 1)}
    if data.kind == "causal-lm":
        out["eval_exact_match"] = exact / len(data)
    return out


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak CUDA memory allocated, or the process's peak resident set size on CPU (Linux/macOS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless index batches (batch,) int64: a fresh seeded shuffle every epoch."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield order[start:start + batch_size]


def optimize(model: torch.nn.Module, data: TaskData, cfg: TrainConfig, device: torch.device,
             on_step=None) -> None:
    """Train in place for ``cfg.steps`` steps; ``on_step(step, loss, lr, seconds)`` after each (1-based)."""
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.magnitude_lr_mult if method(cfg.method).adapter else 1.0)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps))
    params = [p for g in groups for p in g["params"]]
    model.train()
    order = batches(len(data), cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    for step in range(1, cfg.steps + 1):
        started = time.perf_counter()
        loss, _, _ = forward_loss(model, _to(data.batch(next(order)), device), data.kind)
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
        if on_step is not None:
            on_step(step, loss.item(), lr, time.perf_counter() - started)


def threads_for(model: torch.nn.Module, device: torch.device) -> int:
    """torch CPU threads for training ``model``: one below SMALL_MODEL_PARAMS parameters, where
    each op is too small for intra-op parallelism to pay (measured: 100 LoRA steps of the builtin
    model, 0.17M parameters, on 2 cores took 75 s with 2 threads and 9.8 s with 1); torch's
    default otherwise and on GPUs."""
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS
    return 1 if device.type == "cpu" and small else torch.get_num_threads()


@contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
