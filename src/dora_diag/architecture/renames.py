"""Checkpoint names -> the names a model class uses in memory.

transformers 5 renames modules on load (ViT's ``encoder.layer.0.attention.attention.query``
is ``layers.0.attention.q_proj`` in memory) and writes the old names back on save; PEFT names
adapter tensors after the in-memory modules. The renames are data in transformers
(``conversion_mapping``): with transformers installed they are read from there for the
checkpoint's own class; ``RENAMES`` keeps the common ones for when it is not.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from typing import Callable

# model_type -> ordered (pattern, replacement) pairs, as in transformers' conversion_mapping
# ("ViTModel" and its users, "mixtral", "legacy").
_VIT = ((r"encoder\.layer\.", "layers."), (r"attention\.query", "q_proj"), (r"attention\.key", "k_proj"),
        (r"attention\.value", "v_proj"), (r"attention\.output\.dense", "attention.o_proj"),
        (r"intermediate\.dense", "mlp.fc1"), (r"output\.dense", "mlp.fc2"))
_LEGACY = ((r"LayerNorm\.gamma", "LayerNorm.weight"), (r"LayerNorm\.beta", "LayerNorm.bias"))
RENAMES: dict[str, tuple[tuple[str, str], ...]] = {
    **{t: _VIT for t in ("vit", "deit", "vit_msn", "ijepa", "audio-spectrogram-transformer", "vivit")},
    "mixtral": ((r"\.block_sparse_moe\.", ".mlp."),),
    "minimax": ((r"\.block_sparse_moe\.", ".mlp."),),
}
# Layer counts in a config.json, shrunk before building a skeleton model: the renames are
# patterns over layer indices, and a hostile config must not build millions of modules.
_COUNT_KEYS = re.compile(r"(^|_)(layers|layer|depths?|blocks)$|^n_layer$")
MAX_SKELETON_LAYERS = 2


def renamer(config: dict) -> Callable[[str], str]:
    """A function from checkpoint names to in-memory names (the identity where nothing is
    renamed). It is built on its first call: reading transformers' mappings imports
    transformers (seconds), which only names that match no other way need."""
    built: list[Callable[[str], str]] = []

    def rename(name: str) -> str:
        if not built:
            built.append(_build(config))
        return built[0](name)
    return rename


def _build(config: dict) -> Callable[[str], str]:
    found = _from_transformers(_frozen(config)) if config else None
    if found is not None:
        return found
    rules = RENAMES.get(str(config.get("model_type")), ()) + _LEGACY
    compiled = [(re.compile(p), r) for p, r in rules]

    def rename(name: str) -> str:
        for pattern, replacement in compiled:
            name = pattern.sub(replacement, name)
        return name
    return rename


def _frozen(value: object) -> object:
    """A hashable copy of a JSON value (for the cache)."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("__list__", tuple(_frozen(v) for v in value))
    return value


def _thawed(value: object) -> object:
    if isinstance(value, tuple) and value[:1] == ("__list__",):
        return [_thawed(v) for v in value[1]]
    if isinstance(value, tuple):
        return {k: _thawed(v) for k, v in value}
    return value


def _shrunk(config: object) -> object:
    if isinstance(config, dict):
        return {k: (min(v, MAX_SKELETON_LAYERS) if isinstance(v, int) and not isinstance(v, bool)
                    and _COUNT_KEYS.search(k) else _shrunk(v)) for k, v in config.items()}
    if isinstance(config, list):
        return [_shrunk(v) for v in config]
    return config


@lru_cache(maxsize=8)
def _from_transformers(frozen: object) -> Callable[[str], str] | None:
    """The checkpoint conversions transformers applies when loading this config's
    ``architectures[0]``, from a skeleton on the meta device; None without transformers or
    when the class cannot be built from the config."""
    config = _thawed(frozen)
    arch = (config.get("architectures") or [None])[0]
    if not isinstance(arch, str) or not arch.isidentifier():
        return None
    try:
        import torch
        import transformers
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:
        return None
    cls = getattr(transformers, arch, None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        return None
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()   # its config warnings are not the user's business here
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = cls(cls.config_class.from_dict(_shrunk(config)))
            transforms = get_model_conversion_mapping(model)
    # Outside code on an outside config: whatever fails, the table below still applies.
    except Exception:  # noqa: BLE001
        return None
    finally:
        transformers.logging.set_verbosity(verbosity)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    if not renamings and not converters:
        return None

    def rename(name: str) -> str:
        return rename_source_key(name, renamings, converters)[0]
    return rename
