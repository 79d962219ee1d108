"""Which fine-tuning method produced a run, from what its files say.

Evidence, strongest first: the run's ``train_config.json`` (written by ``dora-diag train``,
field ``method``), the ``dora_diag`` metadata our trainer stores in an adapter's safetensors
header (DVoRA and the magnitude variants are saved as plain PEFT DoRA/LoRA adapters), the
adapter's ``adapter_config.json`` (``use_dora``, ``use_rslora``), and the weights themselves
(a full checkpoint is full fine-tuning).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..methods import METHODS as TRAINED, TRAIN_METHODS, peft_method
from .json_limits import load_json_file, parse_json

# What a run can be: a method our trainer has (dora_diag.methods), "rslora" (LoRA with
# use_rslora, from any trainer) or "unknown".
METHODS = (*TRAIN_METHODS, "rslora", "unknown")
# Runs the "will DoRA help?" question is asked of: low-rank updates without a learned magnitude.
LORA_FAMILY = (*(n for n, m in TRAINED.items() if m.adapter and not m.magnitude), "rslora")
TRAIN_CONFIG = "train_config.json"
TRAINER_METADATA = "dora_diag"   # safetensors metadata key of adapters our trainer wrote


def adapter_method(use_dora: bool, use_rslora: bool, ours: str | None) -> str:
    """The method of one PEFT adapter; ``ours`` is the dora_diag metadata JSON, if any."""
    declared = _declared(ours)
    if declared is not None:
        return _with_rslora(declared, use_rslora)
    return _with_rslora(peft_method(use_dora), use_rslora)


def _declared(ours: str | None) -> str | None:
    if not ours:
        return None
    try:
        doc = parse_json(ours.encode(), "adapter metadata", TRAINER_METADATA)
    except InputError:   # the metadata only adds evidence; unreadable, it adds none
        return None
    method = doc.get("method") if isinstance(doc, dict) else None
    return method if method in METHODS else None


def _with_rslora(method: str, use_rslora) -> str:
    """PEFT's plain LoRA scaled by alpha/sqrt(r) is rsLoRA."""
    return "rslora" if method == peft_method(False) and use_rslora is True else method


def run_method(run_path: str, checkpoint_methods: list[str]) -> tuple[str, str]:
    """(method, evidence) of a run: its train_config.json when it names a known method, else
    the checkpoints' common method, else "unknown" (checkpoints of different methods)."""
    config = Path(run_path) / TRAIN_CONFIG
    if config.is_file():
        try:
            doc = load_json_file(config, TRAIN_CONFIG)
        except InputError:
            doc = None
        # dora-diag train writes {"config": {...}, ...}; accept the flat form too.
        cfg = doc.get("config", doc) if isinstance(doc, dict) else None
        method = cfg.get("method") if isinstance(cfg, dict) else None
        if method in METHODS and method != "unknown":
            return _with_rslora(method, cfg.get("use_rslora")), TRAIN_CONFIG
    seen = set(checkpoint_methods)
    if len(seen) == 1:
        method = seen.pop()
        return method, "weights (full checkpoint)" if method == "ft" else "adapter_config.json and weights"
    return "unknown", f"checkpoints of different methods: {', '.join(sorted(seen))}" if seen else "no checkpoint"
