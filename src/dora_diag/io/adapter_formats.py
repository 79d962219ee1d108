"""Which adapter format a safetensors file holds, from its header alone.

Kept apart from the sources that open them (``lycoris``, ``diffusers``, which compute with
torch) so that telling a full checkpoint from an adapter does not import torch.
"""

from __future__ import annotations

import re

from .kohya_names import has_kohya_prefix
from .safetensors_file import TensorInfo

DIFFUSERS_LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
# Components diffusers' LoRA loaders prefix their keys with.
LORA_KEY = re.compile(r"^(unet|transformer|prior|text_encoder(?:_\d)?)\..+\.lora_(?:A|B|magnitude_vector)\b")

FACTORS = ("lora_down.weight", "lora_up.weight")
PARTS = frozenset((*FACTORS, "lora_mid.weight", "alpha", "dora_scale"))
# Key suffixes of the other LyCORIS algorithms, to name what is skipped.
OTHER_ALGORITHMS = {"hada_w1_a": "LoHa", "hada_t1": "LoHa", "lokr_w1": "LoKr", "lokr_w1_a": "LoKr",
                    "lokr_w2": "LoKr", "lokr_w2_a": "LoKr", "oft_blocks": "OFT/BOFT", "diff": "full (diff)",
                    "a1.weight": "GLoRA", "on_input": "IA3", "w_norm": "norm", "lambda_layer": "T-LoRA"}


def is_lycoris_file(tensors: dict[str, TensorInfo]) -> bool:
    """Every key is ``<kohya prefix>_<module>.<part>`` and some part is a LyCORIS weight."""
    if not tensors or not all(has_kohya_prefix(k) and "." in k for k in tensors):
        return False
    parts = {k.split(".", 1)[1] for k in tensors}
    return bool(parts & (PARTS | set(OTHER_ALGORITHMS)))


def is_diffusers_lora(tensors: dict[str, TensorInfo]) -> bool:
    """PEFT LoRA keys behind a pipeline component, as ``save_lora_weights`` writes them."""
    return any(LORA_KEY.match(k) for k in tensors)
