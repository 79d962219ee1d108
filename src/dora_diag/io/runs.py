"""Expand ``[LABEL=]PATH`` arguments into runs of checkpoints ordered by training step.

A *run directory* holds ``checkpoint-N/`` folders (Hugging Face Trainer layout). Weights at
the run root, if any, are the final checkpoint and come last.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .checkpoint import existing, list_dir
from .json_limits import load_json_file
from .training_log import INT64, LogReader, read_jsonl, read_log_history

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
    warnings: tuple[str, ...] = ()   # what of the training log was left out


def parse_spec(spec: str | os.PathLike) -> tuple[str | None, str]:
    """``"LoRA=runs/lora"`` -> ("LoRA", "runs/lora"); a path that exists as given wins."""
    s = os.fspath(spec)
    label, sep, rest = s.partition("=")
    if sep and label and "/" not in label and os.sep not in label and not os.path.exists(s):
        return label, rest
    return None, s


def _has_weights(p: Path) -> bool:
    return any((p / f).is_file() for f in WEIGHT_FILES) or any(f.suffix == ".safetensors" for f in list_dir(p))


def _recorded_step(p: Path) -> int | None:
    """global_step from trainer_state.json, if the checkpoint has a readable one with an integer."""
    state = p / "trainer_state.json"
    if not state.is_file():
        return None
    try:
        doc = load_json_file(state, "trainer_state.json")
    except InputError:
        return None   # informative only, like the log it holds (read_log warns about it)
    step = doc.get("global_step") if isinstance(doc, dict) else None
    if isinstance(step, bool) or not isinstance(step, int):
        return None
    if not 0 <= step < INT64:
        raise InputError(f"{state}: global_step {step if len(str(step)) < 30 else '(too long)'} is out of range "
                         f"(0 to 2^63 - 1)")
    return step


def _checkpoint_dirs(p: Path) -> list[tuple[int, Path]]:
    """The ``checkpoint-N`` folders of a run directory, by step."""
    found = []
    for d in list_dir(p):
        m = CHECKPOINT_DIR.match(d.name)
        if m and d.is_dir():
            if len(m.group(1)) > 18:   # int64 holds every 18-digit number
                raise InputError(f"{d}: step {m.group(1)[:30]} is out of range (at most 18 digits)")
            found.append((int(m.group(1)), d))
    return sorted(found)


def expand_run(spec: str | os.PathLike) -> Run:
    """One run: a single checkpoint, or every ``checkpoint-N`` of a run directory by step."""
    label, raw = parse_spec(spec)
    p = existing(raw)
    label = label or (p.stem if p.is_file() else p.resolve().name)
    if p.is_file():
        return Run(label, raw, (CheckpointRef(label, _recorded_step(p.parent), p.name, raw),))
    refs = [CheckpointRef(label, step, d.name, str(d)) for step, d in _checkpoint_dirs(p)]
    if _has_weights(p):
        step = _recorded_step(p)
        refs.append(CheckpointRef(label, step, "final" if refs else p.name, raw))
    if not refs:
        # Let the checkpoint opener explain what is missing (pickles only, nothing at all...).
        refs.append(CheckpointRef(label, None, p.name, raw))
    log = read_log(p, [Path(r.path) for r in refs])
    return Run(label, raw, tuple(refs), tuple(log.records), tuple(log.warnings()))


def read_log(run_dir: Path, checkpoints: list[Path]) -> LogReader:
    """Training log of a run: dora-diag's ``metrics.jsonl`` at the run root, else the
    ``log_history`` of the newest HF ``trainer_state.json`` (see ``training_log``)."""
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        log = LogReader(metrics)
        read_jsonl(metrics, log)
        return log
    for ckpt in reversed(checkpoints):
        state = ckpt / "trainer_state.json"
        if state.is_file():
            log = LogReader(state)
            read_log_history(state, log)
            return log
    return LogReader(run_dir)


def expand_runs(specs: list[str | os.PathLike]) -> list[Run]:
    runs = [expand_run(s) for s in specs]
    seen: set[str] = set()
    for r in runs:
        if r.label in seen:
            raise InputError(f"two runs are labelled {r.label!r}; name them with LABEL=PATH")
        seen.add(r.label)
    return runs
