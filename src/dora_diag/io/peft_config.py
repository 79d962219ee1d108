"""``adapter_config.json`` of a PEFT LoRA/DoRA adapter: what we accept and each module's scale.

Only adapters whose effective weight is PEFT's merge ``W0 + s·B·A`` (LoRA, rsLoRA) or its
DoRA rescaling are accepted; every other adapter type or LoRA variant is refused by name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, UnsupportedError
from .checkpoint import read_json

# Config fields that switch on a LoRA variant whose merged weight is not W0 + s·BA.
UNSUPPORTED_VARIANTS = {
    "alora_invocation_tokens": "Activated LoRA (aLoRA) applies only after its invocation tokens and cannot be merged",
    "use_qalora": "QA-LoRA pools input features",
    "arrow_config": "Arrow routes tokens between adapters",
    "kasa_config": "KaSA truncates the base weight's singular values",
    "use_bdlora": "BD-LoRA uses block-diagonal factors",
    "monteclora_config": "MonteCLoRA samples its factors",
    "layer_replication": "layer replication changes the number of layers",
    "target_parameters": "LoRA on raw parameters (target_parameters) is not supported yet",
}
# Initialisations that also rewrite the base weights (W0 -> W0 - s·B0·A0, or a quantized
# residual); unless PEFT converted the adapter on save, the factors do not apply to BASE.
RESIDUAL_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")


@dataclass(frozen=True)
class AdapterConfig:
    path: Path
    r: int
    alpha: float
    use_rslora: bool
    use_dora: bool
    rank_pattern: dict
    alpha_pattern: dict
    token_indices: list[int] | dict[str, list[int]] | None

    def rank_and_scale(self, module_path: str) -> tuple[int, float]:
        """(r, s) of one module, as PEFT assigns them: patterns matched against the module path
        (the adapter key without ``base_model.model.``), s = alpha/r or alpha/sqrt(r) (rsLoRA)."""
        r = self.rank_pattern.get(_pattern_key(self.rank_pattern, module_path), self.r)
        alpha = self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module_path), self.alpha)
        return int(r), float(alpha) / (math.sqrt(r) if self.use_rslora else r)

    def indices_for(self, module_path: str) -> list[int] | None:
        """Token indices of the trainable-tokens adapter on ``module_path``."""
        if isinstance(self.token_indices, dict):
            key = _pattern_key(self.token_indices, module_path)
            return self.token_indices.get(key)
        return self.token_indices


def _pattern_key(patterns: dict, module_path: str) -> str:
    """PEFT's ``get_pattern_key``: the first key K with ``(.*\\.)?(K)$`` matching the path."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module_path):
            return key
    return module_path


def read_adapter_config(path: Path) -> AdapterConfig:
    """Parse and validate ``path`` (an adapter_config.json)."""
    cfg = read_json(path, "adapter_config.json")
    peft_type = cfg.get("peft_type")
    if peft_type != "LORA":
        raise UnsupportedError(f"{path}: peft_type {peft_type!r} is not supported; dora-diag reads LORA adapters "
                               "(LoRA, rsLoRA, DoRA); merge the adapter and compare the merged model instead")
    for key, why in UNSUPPORTED_VARIANTS.items():
        if cfg.get(key):
            raise UnsupportedError(f"{path}: {key} is set: {why}; merge the adapter and compare the merged model")
    init = cfg.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(RESIDUAL_INITS):
        raise UnsupportedError(
            f"{path}: init_lora_weights={init!r} rewrites the base weights, so the factors do not apply to the "
            "original base; save the adapter with path_initial_model_for_weight_conversion, or merge it")
    try:
        return AdapterConfig(
            path=path, r=int(cfg["r"]), alpha=float(cfg.get("lora_alpha", 8)),
            use_rslora=bool(cfg.get("use_rslora", False)), use_dora=bool(cfg.get("use_dora", False)),
            rank_pattern=dict(cfg.get("rank_pattern") or {}), alpha_pattern=dict(cfg.get("alpha_pattern") or {}),
            token_indices=cfg.get("trainable_token_indices"))
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: invalid LoRA config ({type(e).__name__}: {e})") from None
