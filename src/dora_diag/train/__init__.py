"""DoRA/LoRA trainer building blocks: adapter layers, injection by name pattern, PEFT adapter files.

Only light imports here (torch); transformers is never imported at module import time.
"""

from .inject import METHODS, AdapterConfig, apply_adapters, merge_adapters, param_groups
from .layers import DoraLinear, DVoraLinear, LoraLinear, MagnitudeOnlyLinear
from .peft_format import load_peft_adapter, save_peft_adapter

__all__ = ["METHODS", "AdapterConfig", "DVoraLinear", "DoraLinear", "LoraLinear", "MagnitudeOnlyLinear",
           "apply_adapters", "load_peft_adapter", "merge_adapters", "param_groups", "save_peft_adapter"]
