"""``adapter_config.json`` of a PEFT LoRA/DoRA adapter: what we accept and each module's scale.

Only adapters whose effective weight is PEFT's merge ``W0 + s·B·A`` (LoRA, rsLoRA) or its
DoRA rescaling are accepted; every other adapter type or LoRA variant is refused by name.
"""

from __future__ import annotations

import math
import re

import regex
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
}
# Options PEFT's ParamWrapper (LoRA on target_parameters) refuses: a file with both was not
# written by PEFT, and what its factors mean is not defined.
PARAMETER_CONFLICTS = {"use_dora": "DoRA", "fan_in_fan_out": "fan_in_fan_out"}
# Larger ranks than any layer's width: refused before the factors' shapes are read.
MAX_RANK = 1 << 16
MATCH_SECONDS = 0.25   # per pattern and module path; real patterns match in microseconds

# Initialisations that also rewrite the base weights (W0 -> W0 - s·B0·A0, or a quantized
# residual); unless PEFT converted the adapter on save, the factors do not apply to BASE.
RESIDUAL_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")


@dataclass(frozen=True)
class PeftConfig:
    path: Path
    r: int
    alpha: float
    use_rslora: bool
    use_dora: bool
    rank_pattern: dict
    alpha_pattern: dict
    token_indices: list[int] | dict[str, list[int]] | None
    target_parameters: tuple[str, ...] = ()   # LoRA on raw parameters (``peft_params``)

    def rank_and_scale(self, module_path: str) -> tuple[int, float]:
        """(r, s) of one module, as PEFT assigns them: patterns matched against the module path
        (the adapter key without ``base_model.model.``), s = alpha/r or alpha/sqrt(r) (rsLoRA)."""
        r = pattern_value(self.rank_pattern, module_path, self.r, f"{self.path}: rank_pattern key")
        alpha = pattern_value(self.alpha_pattern, module_path, self.alpha, f"{self.path}: alpha_pattern key")
        return int(r), float(alpha) / (math.sqrt(r) if self.use_rslora else r)

    def indices_for(self, module_path: str) -> list[int] | None:
        """Token indices of the trainable-tokens adapter on ``module_path``."""
        if isinstance(self.token_indices, dict):
            return pattern_value(self.token_indices, module_path, None, f"{self.path}: trainable_token_indices key")
        return self.token_indices


def pattern_value(patterns: dict, module_path: str, default, where: str = "pattern"):
    """The value of ``module_path``'s pattern key in ``patterns``, or ``default``.

    Keys are regular expressions from files written by strangers: matching is bounded in time
    (``regex`` with a timeout), and a key that backtracks catastrophically is an InputError
    naming ``where`` instead of a hang.
    """
    return patterns.get(_pattern_key(patterns, module_path, where), default)


def _pattern_key(patterns: dict, module_path: str, where: str) -> str:
    """PEFT's ``get_pattern_key``: the first key K with ``(.*\\.)?(K)$`` matching the path."""
    for key in patterns:
        if _bounded(regex.match, rf"(.*\.)?({key})$", key, module_path, where):
            return key
    return module_path


def full_match(pattern: str, name: str, where: str = "target pattern") -> bool:
    """``re.fullmatch(pattern, name)`` bounded in time like ``pattern_value`` (PEFT's target_modules
    given as one regular expression)."""
    return _bounded(regex.fullmatch, pattern, pattern, name, where)


def _bounded(match, compiled: str, key: str, name: str, where: str) -> bool:
    try:
        return match(compiled, name, timeout=MATCH_SECONDS) is not None
    except TimeoutError:
        raise InputError(f"{where} {key!r} takes over {MATCH_SECONDS} s to match {name!r} "
                         "(catastrophic backtracking); simplify the pattern") from None


def read_adapter_config(path: Path) -> PeftConfig:
    """Parse and validate ``path`` (an adapter_config.json)."""
    return parse_adapter_config(read_json(path, "adapter_config.json"), path)


def parse_adapter_config(cfg: dict, path: Path) -> PeftConfig:
    """Validate the LoRA config ``cfg`` read from ``path`` (an adapter_config.json, or a
    diffusers LoRA file whose metadata holds the config)."""
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
    if "r" not in cfg:
        raise InputError(f"{path}: invalid LoRA config (no 'r')")
    targets = _target_parameters(path, cfg)
    return PeftConfig(
        path=path, r=_rank(path, "r", cfg["r"]), alpha=_alpha(path, "lora_alpha", cfg.get("lora_alpha", 8)),
        use_rslora=bool(cfg.get("use_rslora", False)), use_dora=bool(cfg.get("use_dora", False)),
        rank_pattern={k: _rank(path, f"rank_pattern[{k!r}]", v) for k, v in _patterns(path, cfg, "rank_pattern")},
        alpha_pattern={k: _alpha(path, f"alpha_pattern[{k!r}]", v) for k, v in _patterns(path, cfg, "alpha_pattern")},
        token_indices=_token_indices(path, cfg.get("trainable_token_indices")), target_parameters=targets)


def _target_parameters(path: Path, cfg: dict) -> tuple[str, ...]:
    """``target_parameters``: parameter names PEFT matches by suffix (``experts.gate_up_proj``)."""
    value = cfg.get("target_parameters") or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _invalid(path, "target_parameters", value, "a list of parameter names")
    for key, what in PARAMETER_CONFLICTS.items():
        if value and cfg.get(key):
            raise UnsupportedError(f"{path}: {key} is set together with target_parameters; PEFT applies no {what} "
                                   "to raw parameters, so this adapter was not written by PEFT")
    return tuple(value)


def _invalid(path: Path, field: str, value: object, expected: str) -> InputError:
    return InputError(f"{path}: invalid LoRA config: {field} is {_shown(value)}, expected {expected}")


def _rank(path: Path, field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_RANK:
        raise _invalid(path, field, value, f"a positive integer up to {MAX_RANK}")
    return value


def _alpha(path: Path, field: str, value: object) -> float:
    try:
        finite = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(float(value))
    except OverflowError:   # an integer beyond any float
        finite = False
    if not finite:
        raise _invalid(path, field, value, "a finite number")
    return float(value)


def _shown(value: object) -> str:
    """``value`` for a one-line message: a huge integer as its digit count, long values cut."""
    if isinstance(value, int) and len(str(value)) > 30:
        return f"an integer of {len(str(value))} digits"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _patterns(path: Path, cfg: dict, field: str) -> list[tuple[str, object]]:
    """Items of a pattern dict, keys checked to be valid regular expressions (PEFT matches them as such)."""
    patterns = cfg.get(field) or {}
    if not isinstance(patterns, dict):
        raise _invalid(path, field, patterns, "an object")
    for key in patterns:
        try:
            re.compile(key)
        except re.error as e:
            raise _invalid(path, f"{field} key", key, f"a regular expression ({e})") from None
    return list(patterns.items())


def _token_indices(path: Path, value: object) -> list[int] | dict[str, list[int]] | None:
    """None, a list of token ids, or {module pattern: list of token ids}."""
    def ids(v: object) -> bool:
        return isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)

    if value is None or ids(value):
        return value
    if isinstance(value, dict) and all(ids(v) for v in value.values()):
        return dict(_patterns(path, {"trainable_token_indices": value}, "trainable_token_indices"))
    raise _invalid(path, "trainable_token_indices", value, "a list of token ids or an object of such lists")
