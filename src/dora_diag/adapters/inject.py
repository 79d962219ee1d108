"""Put adapters into a model by module-name pattern, merge them back out, build optimizer groups."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import import_module

import torch
from torch import nn

from ..errors import InputError
from ..io.peft_config import full_match, pattern_value
from ..methods import ADAPTER_METHODS, METHODS as ALL_METHODS, method as method_row
from .dense import features, is_dense, with_weight_out_in
from .layers import AdapterLayer, LayerSpec, MagnitudeOnlyLinear

METHODS = ADAPTER_METHODS
# Methods whose magnitude trains: magnitude-only modules (the reduced granularity) make sense under them.
_MAGNITUDE_METHODS = tuple(n for n in ADAPTER_METHODS if ALL_METHODS[n].trains_magnitude)


def layer_class(method: str) -> type[AdapterLayer]:
    """The layer class the methods table names for adapter method ``method``."""
    module, _, name = method_row(method, adapters_only=True).layer.rpartition(".")
    return getattr(import_module(f"{__package__}.{module}"), name)


@dataclass
class AdapterConfig:
    """What to wrap and how.

    ``targets``/``magnitude_only`` patterns match a module's dotted name like PEFT's
    ``target_modules``: the name equals the pattern or ends with ``.`` + pattern, or the pattern
    is a regular expression that matches the whole name. A module matching ``magnitude_only``
    gets a magnitude vector only (the paper's reduced granularity). With a method whose row
    says ``reduced_granularity`` ("dora-magnitude-only") and no ``magnitude_only`` patterns,
    every target is magnitude-only.
    ``rank_pattern``/``alpha_pattern`` give some modules their own r or alpha, keyed like PEFT's
    (a key K applies to a module whose path ends with ``.K`` or is ``K``, K a regular expression).
    """

    method: str = "dora"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    use_rslora: bool = False
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    magnitude_only: tuple[str, ...] = ()
    detach_norm: bool = True
    magnitude_lr_mult: float = 1.0
    seed: int = 0
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)

    def rank_alpha(self, module_path: str) -> tuple[int, float]:
        """(r, alpha) of one module, patterns first."""
        return (pattern_value(self.rank_pattern, module_path, self.rank),
                pattern_value(self.alpha_pattern, module_path, self.alpha))

    def validate(self) -> None:
        cls = layer_class(self.method)
        for where, r in (("rank", self.rank), *((f"rank_pattern[{k!r}]", v) for k, v in self.rank_pattern.items())):
            if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
                raise InputError(f"adapter {where} must be a positive integer, got {r!r}")
        if not cls.per_module_rank and (self.rank_pattern or self.alpha_pattern):
            raise InputError(f"{self.method} layers share one rank across modules: rank/alpha patterns do not apply")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"adapter dropout must be in [0, 1), got {self.dropout}")
        if self.magnitude_only and self.method not in _MAGNITUDE_METHODS:
            raise InputError(f"magnitude_only patterns need a method with a trainable magnitude "
                             f"({', '.join(_MAGNITUDE_METHODS)}), not {self.method!r}")
        for pattern in (*self.targets, *self.magnitude_only, *self.rank_pattern, *self.alpha_pattern):
            try:
                re.compile(pattern)
            except re.error as e:
                raise InputError(f"target pattern {pattern!r} is not a valid regular expression ({e})") from None


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """PEFT-style match of a dotted module name: suffix match on a dot boundary, or full regex."""
    return any(name == p or name.endswith("." + p) or full_match(p, name) for p in patterns)


def _magnitude_only_patterns(cfg: AdapterConfig) -> tuple[str, ...]:
    if ALL_METHODS[cfg.method].reduced_granularity and not cfg.magnitude_only:
        return cfg.targets
    return cfg.magnitude_only


def find_targets(model: nn.Module, cfg: AdapterConfig) -> dict[str, bool]:
    """{dotted name: magnitude_only?} for every dense module the config selects, in model order."""
    mag_patterns = _magnitude_only_patterns(cfg)
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, AdapterLayer):
            raise InputError(f"module {name!r} already has an adapter; merge or reload the model first")
        mag_only = matches(name, mag_patterns)
        if (mag_only or matches(name, cfg.targets)) and is_dense(module):
            found[name] = mag_only
    if not found:
        raise InputError(f"no nn.Linear/Conv1D module matches targets {list(cfg.targets)} "
                         f"or magnitude_only {list(cfg.magnitude_only)}")
    return found


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _spec(cfg: AdapterConfig, name: str, generator: torch.Generator, shared: object) -> LayerSpec:
    rank, alpha = cfg.rank_alpha(name)
    return LayerSpec(rank, alpha, cfg.dropout, cfg.use_rslora, cfg.detach_norm,
                     ALL_METHODS[cfg.method].trains_magnitude, generator, shared)


def apply_adapters(model: nn.Module, cfg: AdapterConfig, modules: dict[str, bool] | None = None) -> list[str]:
    """Wrap matching nn.Linear / transformers Conv1D modules in place; freeze everything else
    (base weights requires_grad=False); return the wrapped module names (dotted paths).

    ``modules`` ({dotted name: magnitude_only?}, e.g. a saved adapter's, in model order) wraps
    exactly those instead of the ones the config's patterns select."""
    cfg.validate()
    targets = find_targets(model, cfg) if modules is None else modules
    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(cfg.seed)
    cls = layer_class(cfg.method)
    shapes = [features(model.get_submodule(n)) for n, mag in targets.items() if not mag]
    # not saved with an adapter: loading draws them again from the seed, before any layer's init
    shared = cls.shared_state(shapes, cfg.rank, generator) if shapes else None
    for name, mag_only in targets.items():
        layer = (MagnitudeOnlyLinear if mag_only else cls).build(model.get_submodule(name),
                                                                  _spec(cfg, name, generator, shared))
        _set_submodule(model, name, layer)
    return list(targets)


def adapter_layers(model: nn.Module) -> dict[str, AdapterLayer]:
    """{dotted name: adapter wrapper} in model order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterLayer)}


def merge_adapters(model: nn.Module) -> nn.Module:
    """Replace every wrapper by a plain dense module with the merged weight (in place; returns model)."""
    layers = adapter_layers(model)
    if not layers:
        raise InputError("merge_adapters: the model has no adapters")
    for name, layer in layers.items():
        merged = layer.merged_weight()
        if not torch.isfinite(merged).all():
            raise InputError(f"merge_adapters: {name} has non-finite merged weights; the adapter is broken")
        _set_submodule(model, name, with_weight_out_in(layer.base_layer, merged))
    return model


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0,
                 magnitude_lr_mult: float = 1.0) -> list[dict]:
    """AdamW param groups: trainable params, magnitudes at lr * magnitude_lr_mult.

    A parameter is a magnitude when its attribute name is ``magnitude`` (DoRA's m, (out,)).
    Groups that would be empty are left out.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise InputError("param_groups: the model has no trainable parameters; apply adapters first")
    mags = [p for n, p in named if n.rsplit(".", 1)[-1] == "magnitude"]
    others = [p for n, p in named if n.rsplit(".", 1)[-1] != "magnitude"]
    groups = [{"params": others, "lr": lr, "weight_decay": weight_decay},
              {"params": mags, "lr": lr * magnitude_lr_mult, "weight_decay": weight_decay}]
    return [g for g in groups if g["params"]]
