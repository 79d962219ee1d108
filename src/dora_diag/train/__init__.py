"""DoRA/LoRA trainer building blocks: adapter layers, injection by name pattern, PEFT adapter files.

Nothing heavy is imported with the package: ``dora_diag.train.config`` (TrainConfig, which
the CLI reads its defaults from) must import without torch, so these names load on first use.
transformers is never imported at module import time.
"""

from importlib import import_module

_LAZY = {"METHODS": ".inject", "AdapterConfig": ".inject", "apply_adapters": ".inject",
         "merge_adapters": ".inject", "param_groups": ".inject",
         "DoraLinear": ".layers", "DVoraLinear": ".layers", "LoraLinear": ".layers",
         "MagnitudeOnlyLinear": ".layers",
         "load_peft_adapter": ".peft_format", "save_peft_adapter": ".peft_format"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_LAZY[name], __name__), name)
