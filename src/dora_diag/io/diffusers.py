"""diffusers-saved LoRA/DoRA files as adapters (pipelines as checkpoints: ``checkpoint.open_pipeline``).

A diffusers LoRA (``pytorch_lora_weights.safetensors``, written by ``save_lora_weights``) holds
PEFT keys behind the component (``unet.<module>.lora_A.weight`` (r, in), ``.lora_B.weight``
(out, r), DoRA's ``.lora_magnitude_vector`` (out,)); the LoRA config of each component is in the
header's ``lora_adapter_metadata`` JSON (``{"unet.r": 4, "unet.lora_alpha": 8, ...}``). Without
it (files saved without metadata) the module is read as diffusers loads it: rank from the
factors, alpha = rank, scale 1.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .checkpoint import Checkpoint
from .json_limits import parse_json
from .method import adapter_method
from .module_scales import ModuleScales
from .peft import AdapterSource
from .peft_config import PeftConfig, parse_adapter_config
from .peft_keys import group_keys
from .safetensors_file import read_header

LORA_METADATA = "lora_adapter_metadata"


def open_diffusers_lora(path: str, base: Checkpoint) -> AdapterSource:
    """Open the diffusers LoRA/DoRA file ``path`` against ``base`` (a pipeline or one component)."""
    tensors, metadata = read_header(path)
    modules, full = group_keys(tensors, path)
    configs = _component_configs(metadata.get(LORA_METADATA), Path(path))
    scales = {}
    for module_path, m in modules.items():
        component, _, inner = module_path.partition(".")
        factors = m.factors
        if factors is None:
            raise InputError(f"{path}: {module_path}: no LoRA factors")
        config = configs.get(component)
        scales[module_path] = config.rank_and_scale(inner) if config else (factors[0].shape[0], 1.0)
    use_dora = any("magnitude" in m.parts for m in modules.values())
    rslora = any(c.use_rslora for c in configs.values())
    return AdapterSource(path, ModuleScales(use_dora, scales), base, modules, full,
                         adapter_method(use_dora, rslora, None))


def _component_configs(raw: str | None, where: Path) -> dict[str, PeftConfig]:
    """LoRA config per component from the ``lora_adapter_metadata`` JSON (keys ``<component>.<field>``)."""
    if raw is None:
        return {}
    flat = parse_json(raw.encode("utf-8", "surrogatepass"), where, f"{LORA_METADATA} metadata")
    if not isinstance(flat, dict):
        raise InputError(f"{where}: {LORA_METADATA} metadata is not a JSON object")
    grouped: dict[str, dict] = {}
    for key, value in flat.items():
        component, dot, field = str(key).partition(".")
        if dot:
            grouped.setdefault(component, {})[field] = value
    return {c: parse_adapter_config(cfg, where) for c, cfg in grouped.items()}
