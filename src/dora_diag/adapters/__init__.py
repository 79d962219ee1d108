"""The adapter library: LoRA, DoRA and the paper's variants as layers (one class per method, named
by the methods table ``dora_diag.methods``), injected by module-name pattern, merged back out,
and saved/loaded in PEFT's file format. It imports neither the training app (``dora_diag.train``)
nor the demo.

Nothing heavy is imported with the package: these names load on first use.
"""

from importlib import import_module

_LAZY = {"METHODS": ".inject", "AdapterConfig": ".inject", "apply_adapters": ".inject",
         "layer_class": ".inject", "merge_adapters": ".inject", "param_groups": ".inject",
         "AdapterLayer": ".layers", "DoraLinear": ".layers", "LoraLinear": ".layers",
         "MagnitudeOnlyLinear": ".layers", "DVoraLinear": ".dvora",
         "load_peft_adapter": ".peft_format", "save_peft_adapter": ".peft_format"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_LAZY[name], __name__), name)
