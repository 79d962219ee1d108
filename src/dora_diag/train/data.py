"""Training data as padded tensors: the builtin tasks A and B, and JSONL files for HF models.

Builtin tasks (causal LM over ``[BOS, x_1..x_L, SEP, y_1..y_L]``, loss on the y's only):
  task A ("substitute"):        y_i = π(x_i)          — a fixed symbol substitution, same order
  task B ("reverse+substitute"): y_i = π(x_{L+1-i})   — same substitution, reversed order
B keeps A's vocabulary and substitution but changes which position each answer must read,
so fine-tuning A -> B has to move attention (Q/K) as well as what is written (V/O, MLP).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError

BOS, SEP = 0, 1
NUM_SYMBOLS = 16
BUILTIN_VOCAB = 2 + NUM_SYMBOLS
BUILTIN_LENGTH = 8
IGNORE = -100
TASKS = ("A", "B")


@dataclass
class TaskData:
    """Examples as tensors.

    input_ids (n, seq) int64; attention_mask (n, seq) int64 or None (no padding);
    labels (n, seq) for causal-lm (IGNORE where no loss) or (n,) class ids for classification.
    """

    kind: str
    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor | None = None
    label_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids[index], "labels": self.labels[index]}
        if self.attention_mask is not None:
            out["attention_mask"] = self.attention_mask[index]
        return out

    def split(self, eval_fraction: float, seed: int) -> tuple["TaskData", "TaskData"]:
        """(train, eval): a seeded random hold-out of ``eval_fraction`` (at least one example)."""
        if len(self) < 2:
            raise InputError(f"need at least 2 examples to hold some out for evaluation, got {len(self)}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        n_eval = min(len(self) - 1, max(1, round(len(self) * eval_fraction)))
        return self.subset(order[n_eval:]), self.subset(order[:n_eval])

    def subset(self, index: torch.Tensor) -> "TaskData":
        mask = None if self.attention_mask is None else self.attention_mask[index]
        return TaskData(self.kind, self.input_ids[index], self.labels[index], mask, self.label_names)


def substitution(seed: int = 1234) -> torch.Tensor:
    """π: a fixed permutation of the symbols, (NUM_SYMBOLS,) int64."""
    return torch.randperm(NUM_SYMBOLS, generator=torch.Generator().manual_seed(seed))


def builtin_task(task: str, n: int, seed: int, length: int = BUILTIN_LENGTH) -> TaskData:
    """``n`` deterministic examples of task "A" or "B"; sequences are 2 * length + 2 long."""
    if task not in TASKS:
        raise InputError(f"unknown builtin task {task!r}; choose one of {', '.join(TASKS)}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(NUM_SYMBOLS, (n, length), generator=g)
    y = substitution()[x if task == "A" else x.flip(1)]
    ids = torch.cat([torch.full((n, 1), BOS), x + 2, torch.full((n, 1), SEP), y + 2], dim=1)
    labels = ids.clone()
    labels[:, :length + 2] = IGNORE
    return TaskData("causal-lm", ids, labels)


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file (one JSON object per non-blank line)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise InputError(f"{p}: cannot read data ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: data is not UTF-8 text") from None
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{p}:{i}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise InputError(f"{p}:{i}: expected a JSON object")
        records.append(rec)
    if not records:
        raise InputError(f"{p}: no records")
    return records


def record_kind(records: list[dict], path: str | Path) -> str:
    """"classification" for {"text","label"}, "causal-lm" for {"text"} or {"prompt","completion"}."""
    def kind(rec: dict) -> str | None:
        if "label" in rec and isinstance(rec.get("text"), str):
            return "classification"
        if isinstance(rec.get("text"), str) or (isinstance(rec.get("prompt"), str)
                                                and isinstance(rec.get("completion"), str)):
            return "causal-lm"
        return None

    kinds = [kind(r) for r in records]
    for i, k in enumerate(kinds, 1):
        if k is None:
            raise InputError(f"{path}: record {i} needs string fields {{\"text\"}}, "
                             f"{{\"prompt\",\"completion\"}} or {{\"text\",\"label\"}}")
    if len(set(kinds)) > 1:
        raise InputError(f"{path}: mixes classification records (with \"label\") and language-model records")
    return kinds[0]


def _label_ids(records: list[dict], path: str | Path) -> tuple[list[int], tuple[str, ...]]:
    labels = [r["label"] for r in records]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        if min(labels) < 0:
            raise InputError(f"{path}: integer labels must be >= 0")
        return labels, tuple(str(i) for i in range(max(labels) + 1))
    if all(isinstance(v, str) for v in labels):
        names = tuple(sorted(set(labels)))
        return [names.index(v) for v in labels], names
    raise InputError(f"{path}: labels must be all integers or all strings")


def tokenize_records(records: list[dict], tokenizer, max_length: int, path: str | Path) -> TaskData:
    """Tokenize JSONL records with a Hugging Face tokenizer; right-pad to the longest example."""
    kind = record_kind(records, path)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    seqs, targets = [], []
    for rec in records:
        if kind == "classification" or "prompt" not in rec:
            ids = tokenizer(rec["text"], add_special_tokens=True)["input_ids"]
            ids = ids if kind == "classification" else ids + eos
            targets.append(None if kind == "classification" else list(ids))
        else:
            prompt = tokenizer(rec["prompt"], add_special_tokens=True)["input_ids"]
            completion = tokenizer(rec["completion"], add_special_tokens=False)["input_ids"] + eos
            ids = prompt + completion
            targets.append([IGNORE] * len(prompt) + completion)
        seqs.append(ids[:max_length])
    if not any(seqs):
        raise InputError(f"{path}: every record tokenizes to nothing")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    if kind == "classification":
        label_ids, names = _label_ids(records, path)
        return TaskData(kind, ids, torch.tensor(label_ids, dtype=torch.long), mask, names)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    for i, t in enumerate(targets):
        t = t[:max_length]
        labels[i, :len(t)] = torch.tensor(t, dtype=torch.long)
    return TaskData(kind, ids, labels, mask)
