"""Fused experts parameters and the per-expert matrices checkpoints store them as.

transformers 5 holds a MoE layer's experts in memory as 3-D parameters, ``experts.gate_up_proj
(E, 2I, H)`` and ``experts.down_proj (E, H, I)``, but many families (Mixtral, Qwen2/3-MoE,
OLMoE, DeepSeek ...) are saved as E separate ``nn.Linear`` weights per part:
``experts.{e}.gate_proj.weight (I, H)`` and ``experts.{e}.up_proj.weight (I, H)``, stacked
along the expert axis and concatenated along the output rows in this order (transformers'
``conversion_mapping``: ``MergeModulelist(dim=0)`` then ``Concatenate(dim=1)``). With
transformers installed the parts are read from its mapping for the model type; ``SPLIT_PARTS``
holds the common ones for when it is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# Per-expert weight leaf -> (fused parameter leaf, position in the concatenation), as the
# qwen2_moe (gate_proj, up_proj, down_proj) and mixtral (w1, w3, w2) conversions give them.
SPLIT_PARTS: dict[str, tuple[str, int]] = {
    "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1), "down_proj": ("down_proj", 0),
    "w1": ("gate_up_proj", 0), "w3": ("gate_up_proj", 1), "w2": ("down_proj", 0),
}
_SOURCE = re.compile(r"^(?:.*\.)?experts\.\*\.(\w+)\.weight$")
_TARGET = re.compile(r"^(?:.*\.)?experts\.(\w+)$")
_PER_EXPERT = re.compile(r"^(?P<owner>.*\.experts)\.(?P<expert>\d{1,9})\.(?P<leaf>\w+)\.weight$")


@dataclass(frozen=True)
class SplitExperts:
    """A fused experts parameter stored as per-expert matrices.

    ``parts[e]`` lists expert e's stored weights in concatenation order; each is (rows_j, cols)
    and together they are the fused parameter's ``[e]`` slice (sum rows_j, cols).
    """

    name: str                           # the fused parameter under the stored prefix
    parts: tuple[tuple[str, ...], ...]  # per expert, base tensor names in row order


@lru_cache(maxsize=64)
def split_parts(model_type: str | None) -> dict[str, tuple[str, int]]:
    """``SPLIT_PARTS`` for ``model_type``: from transformers' checkpoint conversions when it is
    installed and converts this model type's experts, else the table."""
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    except ImportError:
        return SPLIT_PARTS
    derived = {}
    for transform in (get_checkpoint_conversion_mapping(model_type) or []) if model_type else []:
        derived.update(_converted_parts(transform))
    return derived or SPLIT_PARTS


def _converted_parts(transform) -> dict[str, tuple[str, int]]:
    """The parts of one ``WeightConverter`` that stacks per-expert weights (``MergeModulelist(dim=0)``)
    and concatenates them along the output rows (``Concatenate(dim=1)``); {} for any other."""
    ops = [(type(op).__name__, getattr(op, "dim", None)) for op in getattr(transform, "operations", None) or []]
    sources = [_SOURCE.match(p) for p in transform.source_patterns]
    targets = [_TARGET.match(p) for p in transform.target_patterns]
    if (ops not in ([("MergeModulelist", 0)], [("MergeModulelist", 0), ("Concatenate", 1)])
            or len(targets) != 1 or None in targets or None in sources or (len(sources) > 1) != (len(ops) > 1)):
        return {}
    return {m[1]: (targets[0][1], i) for i, m in enumerate(sources)}


def split_experts(names: list[str], model_type: str | None = None) -> dict[str, SplitExperts]:
    """The fused parameters that ``names`` store per expert, by the fused name they would have
    under the stored prefix (``…block_sparse_moe.experts.gate_up_proj``; renames such as
    Mixtral's ``block_sparse_moe`` -> ``mlp`` are left to ``renames``). Only complete sets are
    returned: experts 0..E-1, each with every part."""
    parts = split_parts(model_type)
    found: dict[str, dict[int, dict[int, str]]] = {}
    for name in names:
        m = _PER_EXPERT.match(name)
        if m is None or m["leaf"] not in parts:
            continue
        fused, position = parts[m["leaf"]]
        slot = found.setdefault(f"{m['owner']}.{fused}", {}).setdefault(int(m["expert"]), {})
        slot[position] = None if position in slot else name   # two leaves for one slot: not this layout
    out = {}
    for fused, experts in found.items():
        counts = {len(p) for p in experts.values()}
        complete = (sorted(experts) == list(range(len(experts))) and len(counts) == 1
                    and all(sorted(p) == list(range(len(p))) and None not in p.values() for p in experts.values()))
        if complete:
            out[fused] = SplitExperts(fused, tuple(tuple(experts[e][j] for j in range(len(experts[e])))
                                                   for e in range(len(experts))))
    return out
