"""Module types in the order a transformer block runs them (attention, then the MLP), as data."""

from __future__ import annotations

MODULE_ORDER = ("q_proj", "query", "q", "k_proj", "key", "k", "v_proj", "value", "v", "c_attn", "qkv_proj",
                "Wqkv", "query_key_value", "o_proj", "out_proj", "dense", "c_proj", "gate_proj", "w1", "up_proj",
                "w3", "fc1", "c_fc", "dense_h_to_4h", "down_proj", "w2", "fc2", "dense_4h_to_h")
_RANK = {m: i for i, m in enumerate(MODULE_ORDER)}


def in_model_order(modules) -> list[str]:
    """Distinct module types by the ``MODULE_ORDER`` rank of their first known dotted part (fused
    groups "c_attn.q" right after "c_attn"), unknown ones last, ties alphabetically."""
    def key(module: str) -> tuple:
        return min((_RANK[part] for part in module.split(".") if part in _RANK), default=len(_RANK)), module

    return sorted(dict.fromkeys(modules), key=key)
