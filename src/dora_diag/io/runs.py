"""Expand ``[LABEL=]PATH`` arguments into runs of checkpoints ordered by training step.

A *run directory* holds ``checkpoint-N/`` folders (Hugging Face Trainer layout). Weights at
the run root, if any, are the final checkpoint and come last.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .checkpoint import existing

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_config.json")


@dataclass(frozen=True)
class CheckpointRef:
    """One fine-tuned checkpoint of a run. ``step`` is None when nothing records it."""

    run: str
    step: int | None
    name: str
    path: str


@dataclass(frozen=True)
class Run:
    label: str
    path: str
    checkpoints: tuple[CheckpointRef, ...]
    log: tuple[dict, ...] = ()   # training log records, each with "step" (see read_log)


def parse_spec(spec: str | os.PathLike) -> tuple[str | None, str]:
    """``"LoRA=runs/lora"`` -> ("LoRA", "runs/lora"); a path that exists as given wins."""
    s = os.fspath(spec)
    label, sep, rest = s.partition("=")
    if sep and label and "/" not in label and os.sep not in label and not os.path.exists(s):
        return label, rest
    return None, s


def _has_weights(p: Path) -> bool:
    return any((p / f).is_file() for f in WEIGHT_FILES) or any(
        f.suffix == ".safetensors" for f in p.iterdir())


def _recorded_step(p: Path) -> int | None:
    """global_step from trainer_state.json, if the checkpoint has one."""
    state = p / "trainer_state.json"
    if state.is_file():
        try:
            step = json.loads(state.read_text(encoding="utf-8")).get("global_step")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            return None
        return step if isinstance(step, int) else None
    return None


def expand_run(spec: str | os.PathLike) -> Run:
    """One run: a single checkpoint, or every ``checkpoint-N`` of a run directory by step."""
    label, raw = parse_spec(spec)
    p = existing(raw)
    label = label or (p.stem if p.is_file() else p.resolve().name)
    if p.is_file():
        return Run(label, raw, (CheckpointRef(label, _recorded_step(p.parent), p.name, raw),))
    steps = sorted((int(m.group(1)), d) for d in p.iterdir()
                   if d.is_dir() and (m := CHECKPOINT_DIR.match(d.name)))
    refs = [CheckpointRef(label, step, d.name, str(d)) for step, d in steps]
    if _has_weights(p):
        step = _recorded_step(p)
        refs.append(CheckpointRef(label, step, "final" if refs else p.name, raw))
    if not refs:
        # Let the checkpoint opener explain what is missing (pickles only, nothing at all...).
        refs.append(CheckpointRef(label, None, p.name, raw))
    return Run(label, raw, tuple(refs), read_log(p, [Path(r.path) for r in refs]))


def read_log(run_dir: Path, checkpoints: list[Path]) -> tuple[dict, ...]:
    """Training log of a run: dora-diag's ``metrics.jsonl`` at the run root, else the
    ``log_history`` of the newest HF ``trainer_state.json``. Records without an integer
    ``step`` and lines that are not JSON objects are ignored: the log is informative only."""
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        records = []
        for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return _with_steps(records)
    for ckpt in reversed(checkpoints):
        state = ckpt / "trainer_state.json"
        if state.is_file():
            try:
                history = json.loads(state.read_text(encoding="utf-8")).get("log_history", [])
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                return ()
            return _with_steps(history if isinstance(history, list) else [])
    return ()


def _with_steps(records: list) -> tuple[dict, ...]:
    return tuple(r for r in records if isinstance(r, dict) and isinstance(r.get("step"), int))


def expand_runs(specs: list[str | os.PathLike]) -> list[Run]:
    runs = [expand_run(s) for s in specs]
    seen: set[str] = set()
    for r in runs:
        if r.label in seen:
            raise InputError(f"two runs are labelled {r.label!r}; name them with LABEL=PATH")
        seen.add(r.label)
    return runs
