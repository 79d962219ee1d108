"""Save and load adapters in PEFT 0.21's file format (adapter_config.json + adapter_model.safetensors).

Every method is written as an ordinary PEFT LoRA/DoRA adapter with the same effective weight,
so PEFT and the analyzer read all of them; each layer class writes and reads its own tensors
and says which adapter_config.json flags it needs (``layers.AdapterLayer.peft_tensors``,
``load_peft_tensors``, ``peft_config_fields``): DVoRA as lora_A = diag(λ_d)·A_shared, lora_B =
diag(λ_b)·B_shared / s; magnitude-only modules as zero factors plus the trained magnitude. The
true method rides along as JSON in the safetensors metadata (key ``dora_diag``), where PEFT does
not see it (an extra adapter_config.json field makes PEFT warn on every load).
Shapes: lora_A (r, in), lora_B (out, r), lora_magnitude_vector (out,), for Conv1D too.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, fields, replace
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from ..errors import InputError, UnsupportedError
from ..io.checkpoint import ADAPTER_WEIGHTS, read_json
from ..io.method import TRAINER_METADATA as METADATA_KEY
from ..io.peft import locate_adapter
from ..io.peft_config import read_adapter_config
from ..io.peft_keys import PREFIX, WRITTEN, group_keys
from ..io.safetensors_file import RowReader, read_header
from ..methods import peft_method
from ..outputs.atomic import write_atomic
from .dense import is_conv1d, is_dense
from .inject import AdapterConfig, adapter_layers, apply_adapters
from .layers import AdapterLayer, lora_scaling

_PLAIN_NAME = re.compile(r"\w+")
# PEFT 0.21 LoraConfig defaults for the fields we do not set (as its save_pretrained writes them).
_PEFT_DEFAULTS = {
    "alora_invocation_tokens": None, "alpha_pattern": {}, "arrow_config": None, "bias": "none",
    "corda_config": None, "ensure_weight_tying": False, "eva_config": None, "exclude_modules": None,
    "inference_mode": True, "init_lora_weights": True, "kasa_config": None, "layer_replication": None,
    "layers_pattern": None, "layers_to_transform": None, "loftq_config": {}, "lora_bias": False,
    "lora_ga_config": None, "megatron_config": None, "megatron_core": "megatron.core", "modules_to_save": None,
    "monteclora_config": None, "peft_type": "LORA", "peft_version": "0.21.2", "qalora_group_size": 16,
    "rank_pattern": {}, "revision": None, "target_parameters": None, "task_type": None,
    "trainable_token_indices": None, "use_bdlora": None, "use_qalora": False, "velora_config": None,
}


def _peft_rank_scaling(cfg: AdapterConfig, name: str) -> tuple[int, float]:
    """(r, the scaling PEFT applies to B·A) of module ``name`` under ``cfg``."""
    rank, alpha = cfg.rank_alpha(name)
    return rank, lora_scaling(alpha, rank, cfg.use_rslora)


def _suffixed_tensors(layer: AdapterLayer, cfg: AdapterConfig, name: str) -> dict[str, torch.Tensor]:
    """{PEFT suffix: tensor} giving PEFT's forward the same weight as ``layer`` (module ``name``)."""
    with torch.no_grad():
        out = layer.peft_tensors(*_peft_rank_scaling(cfg, name))
        return {WRITTEN[role]: v.detach().cpu().contiguous() for role, v in out.items()}


def _config_fields(layers: dict[str, AdapterLayer]) -> dict[str, bool]:
    """The variant flags (``use_dora``) of the file: each set when any layer's export needs it."""
    flags = [layer.peft_config_fields() for layer in layers.values()]
    return {key: any(f[key] for f in flags) for key in flags[0]}


def _target_modules(cfg: AdapterConfig, names: list[str]) -> list[str]:
    """The config's patterns when they are plain names (PEFT matches those the same way), else the exact paths."""
    patterns = sorted(set(cfg.targets) | set(cfg.magnitude_only))
    return patterns if all(_PLAIN_NAME.fullmatch(p) for p in patterns) else names


def save_peft_adapter(model: nn.Module, cfg: AdapterConfig, out_dir, base_model_name_or_path: str | None = None) -> None:
    """Write adapter_config.json + adapter_model.safetensors exactly as PEFT 0.21 would (peft_type LORA, use_dora,
    use_rslora, r, lora_alpha, target_modules, keys base_model.model.<path>.lora_A.weight / lora_B.weight /
    lora_magnitude_vector). Atomic writes."""
    layers = adapter_layers(model)
    if not layers:
        raise InputError("save_peft_adapter: the model has no adapters; call apply_adapters first")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot create the adapter directory ({e.strerror or e})") from None
    tensors = {f"{PREFIX}{name}.{suffix}": t for name, layer in layers.items()
               for suffix, t in _suffixed_tensors(layer, cfg, name).items()}
    names = list(layers)
    config = {**_PEFT_DEFAULTS,
              "auto_mapping": {"base_model_class": type(model).__name__, "parent_library": type(model).__module__},
              "base_model_name_or_path": base_model_name_or_path,
              "fan_in_fan_out": any(is_conv1d(layer.base_layer) for layer in layers.values()),
              "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout, "r": cfg.rank,
              "rank_pattern": dict(cfg.rank_pattern), "alpha_pattern": dict(cfg.alpha_pattern),
              "target_modules": _target_modules(cfg, names), **_config_fields(layers),
              "use_rslora": cfg.use_rslora}
    ours = {**asdict(cfg), "magnitude_only_modules": [n for n, l in layers.items() if l.magnitude_only],
            "modules": names}
    metadata = {"format": "pt", METADATA_KEY: json.dumps(ours)}
    write_atomic(out / ADAPTER_WEIGHTS, safetensors.torch.save(tensors, metadata=metadata))
    write_atomic(out / "adapter_config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")


def _our_config(raw: str | None, where: Path) -> dict | None:
    if raw is None:
        return None
    try:
        ours = json.loads(raw)
        known = {f.name for f in fields(AdapterConfig)}
        cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in ours.items() if k in known}
        return {"cfg": AdapterConfig(**cfg), "magnitude_only": list(ours["magnitude_only_modules"])}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{where}: unreadable {METADATA_KEY} metadata ({type(e).__name__}: {e})") from None


def load_peft_adapter(model: nn.Module, adapter_dir: str | os.PathLike) -> AdapterConfig:
    """Apply adapters to `model` and load the factors from a PEFT adapter directory (safetensors only; refuse
    adapter_model.bin with an InputError). Returns the adapter's config (our own method when we wrote it)."""
    config_path, weights = locate_adapter(str(adapter_dir))
    peft_cfg = read_adapter_config(config_path)
    infos, metadata = read_header(str(weights))
    modules, full = group_keys(infos, str(weights))
    if full or any(m.factors is None or m.is_embedding for m in modules.values()):
        raise UnsupportedError(f"{weights}: only LoRA/DoRA factors on Linear/Conv1D layers can be loaded "
                               "(no embeddings, trainable tokens or modules_to_save)")
    ours = _our_config(metadata.get(METADATA_KEY), weights)
    raw = read_json(config_path, "adapter_config.json")
    cfg = ours["cfg"] if ours else AdapterConfig(
        method=peft_method(peft_cfg.use_dora), rank=peft_cfg.r, alpha=peft_cfg.alpha,
        dropout=float(raw.get("lora_dropout", 0.0)), use_rslora=peft_cfg.use_rslora, targets=_as_patterns(raw),
        rank_pattern=dict(peft_cfg.rank_pattern), alpha_pattern=dict(peft_cfg.alpha_pattern))
    mag_only = set(ours["magnitude_only"] if ours else ())
    if adapter_layers(model):
        raise InputError(f"{weights}: the model already has adapters; load into a model without them")
    dense = [n for n, m in model.named_modules() if is_dense(m)]
    missing = sorted(set(modules) - set(dense))
    if missing:
        raise InputError(f"{weights}: module {missing[0]!r} is not a Linear/Conv1D module of this model")
    # wrap exactly the file's modules; the config validates with patterns naming just those
    exact = replace(cfg, targets=tuple(map(re.escape, modules)), magnitude_only=tuple(map(re.escape, mag_only)))
    apply_adapters(model, exact, {n: n in mag_only for n in dense if n in modules})
    with RowReader() as reader, torch.no_grad():
        for name, layer in adapter_layers(model).items():
            parts = {role: reader.read_all(info) for role, info in modules[name].parts.items()}
            _, scaling = _peft_rank_scaling(cfg, name)
            layer.load_peft_tensors(parts, scaling, f"{weights}: {name}")
    return cfg


def _as_patterns(raw: dict) -> tuple[str, ...]:
    targets = raw.get("target_modules") or ()
    return (targets,) if isinstance(targets, str) else tuple(targets)
