"""Fused experts parameters stored per expert: the parts and their row order, as transformers converts them."""

from __future__ import annotations

import sys

import pytest

from dora_diag.architecture import experts
from dora_diag.architecture.experts import SPLIT_PARTS, split_experts, split_parts


def _names(owner: str, leaves: tuple[str, ...], count: int) -> list[str]:
    return [f"{owner}.{e}.{leaf}.weight" for e in range(count) for leaf in leaves]


def test_parts_in_row_order_per_expert():
    names = _names("model.layers.0.block_sparse_moe.experts", ("w2", "w3", "w1"), 3) + ["model.layers.0.x.weight"]
    found = split_experts(names, "mixtral")
    gate_up = found["model.layers.0.block_sparse_moe.experts.gate_up_proj"].parts
    assert gate_up[2] == ("model.layers.0.block_sparse_moe.experts.2.w1.weight",
                          "model.layers.0.block_sparse_moe.experts.2.w3.weight")
    assert found["model.layers.0.block_sparse_moe.experts.down_proj"].parts[1] == (
        "model.layers.0.block_sparse_moe.experts.1.w2.weight",)


@pytest.mark.parametrize("names", [
    _names("m.experts", ("gate_proj", "up_proj"), 3)[:-1],                       # expert 2 lacks up_proj
    [n for n in _names("m.experts", ("gate_proj", "up_proj"), 3) if ".1." not in n],   # expert 1 missing
])
def test_incomplete_sets_are_not_fused(names):
    assert "m.experts.gate_up_proj" not in split_experts(names, "qwen3_moe")


@pytest.mark.parametrize("model_type", ["mixtral", "minimax", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3"])
def test_table_agrees_with_transformers_conversions(model_type):
    pytest.importorskip("transformers.conversion_mapping")
    derived = split_parts(model_type)
    assert derived and all(SPLIT_PARTS[leaf] == part for leaf, part in derived.items())


def test_without_transformers_the_table_applies(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers.conversion_mapping", None)   # import fails
    experts.split_parts.cache_clear()
    try:
        assert split_parts("mixtral") is SPLIT_PARTS
    finally:
        experts.split_parts.cache_clear()
