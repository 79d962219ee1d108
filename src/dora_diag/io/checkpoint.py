"""Open a full checkpoint: a model directory (single file or index-sharded) or one file.

Only the headers are read here; tensor data is streamed later through a ``RowReader``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import InputError, UnsupportedError
from .hub_cache import looks_like_repo_id, resolve_repo_id
from .json_limits import load_json_file
from .safetensors_file import TensorInfo, read_header

INDEX_NAME = "model.safetensors.index.json"
MODEL_INDEX = "model_index.json"   # a diffusers pipeline: one folder per component
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# quantization_config methods that store plain fp8 weights: dequantized with their scales (io/fp8.py) and compared.
FP8_METHODS = ("fp8", "fbgemm_fp8")
# Tensor-name suffixes of packed quantized layouts, for checkpoints saved without a config.json.
PACKED_SUFFIXES = ((".qweight", "GPTQ/AWQ"), (".weight.absmax", "bitsandbytes 4-bit"),
                   (".weight.quant_state.bitsandbytes__nf4", "bitsandbytes 4-bit"),
                   (".weight.quant_state.bitsandbytes__fp4", "bitsandbytes 4-bit"), (".SCB", "bitsandbytes 8-bit"))


@dataclass
class Checkpoint:
    """Tensor locations and config of one checkpoint. ``path`` is what the user gave."""

    path: str
    tensors: dict[str, TensorInfo]
    config: dict = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type")

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def existing(path: str | os.PathLike) -> Path:
    """``path`` as a Path, if it is a regular file or a directory (not a FIFO or device)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or directory") from None
    except OSError as e:   # EACCES on a parent, ENAMETOOLONG, ELOOP, ...
        raise InputError(f"{path}: cannot access ({e.strerror or e})") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(f"{path}: not a regular file or directory")
    return p


def list_dir(p: Path) -> list[Path]:
    """The entries of directory ``p``, sorted; an unreadable directory is the user's error."""
    try:
        return sorted(p.iterdir())
    except OSError as e:
        raise InputError(f"{p}: cannot list the directory ({e.strerror or e})") from None


def read_json(path: Path, what: str) -> dict:
    data = load_json_file(path, what)
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} is not a JSON object")
    return data


def read_config(directory: Path) -> dict:
    """config.json of a model directory ({} when absent); refuses packed quantized models."""
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        return {}
    config = read_json(cfg_path, "config.json")
    quant = config.get("quantization_config")
    if isinstance(quant, dict):
        method = quant.get("quant_method") or ("bitsandbytes" if quant.get("load_in_4bit") or quant.get("load_in_8bit") else "unknown")
        if method not in FP8_METHODS:
            raise _quantized(directory, method)
    return config


def _quantized(where: Path, method: str) -> UnsupportedError:
    return UnsupportedError(f"{where}: quantized checkpoint ({method}); packed quantized weights are not supported "
                            "yet, compare the unquantized weights instead")


def _checked(ckpt: Checkpoint) -> Checkpoint:
    """Refuse packed quantized tensors that no quantization_config announced."""
    for name in ckpt.tensors:
        method = next((m for suffix, m in PACKED_SUFFIXES if name.endswith(suffix)), None)
        if method:
            raise _quantized(Path(ckpt.path), f"{method}: tensor {name!r}")
    return ckpt


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open a ``.safetensors`` file, a directory with ``model.safetensors`` or shards, a diffusers
    pipeline, or a model id (``org/model``) in the local Hugging Face cache."""
    p = Path(path)
    if not os.path.exists(path) and looks_like_repo_id(os.fspath(path)):
        p = resolve_repo_id(os.fspath(path))
    p = existing(p)
    if p.is_file():
        if p.suffix != ".safetensors":
            raise _not_safetensors(p, [p])
        tensors, metadata = read_header(str(p))
        return _checked(Checkpoint(str(path), tensors, read_config(p.parent), metadata))
    if (p / MODEL_INDEX).is_file():
        return open_pipeline(p, str(path))
    config = read_config(p)
    if (p / INDEX_NAME).is_file():
        return _checked(Checkpoint(str(path), _read_index(p), config))
    entries = list_dir(p)
    files = _without_variants([f for f in entries if f.suffix == ".safetensors" and f.name != ADAPTER_WEIGHTS])
    if not files:
        raise _not_safetensors(p, entries)
    return _checked(Checkpoint(str(path), _merge_shards(files), config,
                               read_header(str(files[0]))[1] if len(files) == 1 else {}))


def _without_variants(files: list[Path]) -> list[Path]:
    """Drop precision variants saved beside the main weights (``model.fp16.safetensors`` next to
    ``model.safetensors``, as ``save_pretrained(variant=...)`` writes them): copies, not shards."""
    names = {f.name for f in files}
    return [f for f in files if not (len(f.name.split(".")) == 3 and f"{f.name.split('.')[0]}.safetensors" in names)]


def adapter_base_id(adapter: str | os.PathLike) -> str | None:
    """``base_model_name_or_path`` of a PEFT adapter directory (or of its weights file), if set."""
    p = Path(adapter)
    config = (p if p.is_dir() else p.parent) / ADAPTER_CONFIG
    if not (p.is_dir() or p.is_file()) or not config.is_file():
        return None
    value = read_json(config, ADAPTER_CONFIG).get("base_model_name_or_path")
    return value if isinstance(value, str) and value else None


def open_pipeline(directory: Path, given: str) -> Checkpoint:
    """A diffusers pipeline (``unet/``, ``transformer/``, ``text_encoder/``, ``vae/``, ... each a
    checkpoint directory) as one checkpoint: every component with weights, its tensor names
    prefixed ``<component>.`` so components never collide; folders without weights (scheduler,
    tokenizer) are left out."""
    index = read_json(directory / MODEL_INDEX, MODEL_INDEX)
    tensors: dict[str, TensorInfo] = {}
    for component in sorted(k for k in index if not k.startswith("_")):
        folder = directory / component
        if folder.is_dir() and any(f.suffix == ".safetensors" or f.suffix in PICKLE_SUFFIXES for f in list_dir(folder)):
            for name, info in open_checkpoint(folder).tensors.items():
                tensors[f"{component}.{name}"] = replace(info, name=f"{component}.{name}")
    if not tensors:
        raise InputError(f"{directory}: a diffusers pipeline ({MODEL_INDEX}) without component weights")
    return Checkpoint(given, tensors)


def _not_safetensors(p: Path, entries: list[Path]) -> InputError:
    pickles = [e.name for e in entries if e.suffix in PICKLE_SUFFIXES]
    if pickles:
        return InputError(
            f"{p}: only pickle checkpoints ({', '.join(pickles[:3])}); dora-diag never unpickles untrusted files. "
            "Convert to safetensors first (e.g. model.save_pretrained(dir, safe_serialization=True) "
            "in a trusted environment)")
    if p.is_file():
        return InputError(f"{p}: not a .safetensors file")
    return InputError(f"{p}: no .safetensors files in this directory")


def _merge_shards(files: list[Path]) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        for name, info in read_header(str(f))[0].items():
            if name in tensors:
                raise InputError(f"{f.parent}: tensor {name!r} appears in two shards "
                                 f"({Path(tensors[name].path).name} and {f.name})")
            tensors[name] = info
    return tensors


def _read_index(directory: Path) -> dict[str, TensorInfo]:
    index = read_json(directory / INDEX_NAME, INDEX_NAME)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{directory / INDEX_NAME}: no weight_map")
    shard_names = sorted(set(map(str, weight_map.values())))
    headers: dict[str, dict[str, TensorInfo]] = {}
    for shard in shard_names:
        if Path(shard).is_absolute() or ".." in Path(shard).parts:
            raise InputError(f"{directory / INDEX_NAME}: shard {shard!r} lies outside the checkpoint directory")
        shard_path = directory / shard
        if not shard_path.is_file():
            raise InputError(f"{directory / INDEX_NAME}: points at missing shard {shard}")
        headers[shard] = read_header(str(shard_path))[0]
    owners: dict[str, str] = {}
    for shard, tensors in headers.items():
        for name in tensors:
            if name in owners:
                raise InputError(f"{directory}: tensor {name!r} appears in two shards ({owners[name]} and {shard})")
            owners[name] = shard
    result: dict[str, TensorInfo] = {}
    for name, shard in weight_map.items():
        info = headers[str(shard)].get(name)
        if info is None:
            raise InputError(f"{directory / INDEX_NAME}: tensor {name!r} is missing from its shard {shard}")
        result[name] = info
    return result
