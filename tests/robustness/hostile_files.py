"""Writers of hostile inputs (importable as ``hostile_files``): raw safetensors headers over
sparse data (a file that declares gigabytes costs no disk), hand-made PEFT adapters, deep and
huge JSON."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

Q = "model.layers.{}.self_attn.q_proj.weight"
ADAPTER_KEY = "base_model.model.model.layers.{}.self_attn.q_proj.lora_{}.weight"
ITEM = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1}
DEEP = 100_000


def raw_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], header_extra: dict | None = None) -> Path:
    """A valid safetensors file whose data section is a hole: ``{name: (dtype, shape)}``."""
    header, offset = dict(header_extra or {}), 0
    for name, (dtype, shape) in tensors.items():
        n = ITEM[dtype]
        for s in shape:
            n *= s
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    return raw_header(path, json.dumps(header).encode(), offset)


def raw_header(path: Path, header: bytes, data_bytes: int = 0) -> Path:
    """A file of the 8-byte length, ``header`` and ``data_bytes`` of zeros (sparse)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + data_bytes)
    return path


def model_dir(path: Path, tensors: dict[str, tuple[str, list[int]]], config: dict | None = None) -> Path:
    raw_safetensors(path / "model.safetensors", tensors)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    return path


def adapter(path: Path, factors: dict[str, torch.Tensor], **config) -> Path:
    """A PEFT LoRA adapter directory from ready factors ``{key: tensor}``; ``config`` overrides."""
    path.mkdir(parents=True, exist_ok=True)
    save_file(factors, str(path / "adapter_model.safetensors"))
    cfg = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], **config}
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path


def deep_json(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def long_number(digits: int = 5000) -> str:
    return "1" * digits
