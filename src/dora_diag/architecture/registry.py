"""Per-architecture facts as tables, looked up by config.json's ``model_type`` and module name.

Add an architecture by adding rows here, not branches elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from ..errors import InputError
from .conv1d import CONV1D_STYLE, conv1d_attributes, flags_experts_transposed, right_operand_attributes

# Components that hold the numbered blocks: "model.layers.3.", "h.3.", "encoder.layer.3.", T5's
# "block.3.", ViT/CLIP "blocks.3.", a UNet's "attentions.1."; any "*_blocks"/"*_layers" too.
LAYER_CONTAINERS = ("layers", "layer", "h", "blocks", "block", "resblocks", "attentions", "resnets",
                    "downsamplers", "upsamplers")
# Singular containers right inside a block hold its sub-layers (T5 "block.2.layer.1.", ResNet
# "layers.0.layer.1."): part of the module, not of the layer.
SUBLAYER_CONTAINERS = ("layer", "block")
# Outer containers of hierarchical models, by forward order (ResNet/ConvNeXt "stages.N", a UNet's
# down, mid and up blocks, the original SD UNet's input/middle/output blocks).
_STAGE_ORDER = {"stages": 1, "down_blocks": 1, "input_blocks": 1, "mid_block": 2, "middle_block": 2,
                "up_blocks": 3, "output_blocks": 3}
UNNUMBERED_STAGES = ("mid_block",)
# Order of sibling containers inside a UNet block: resnet i runs before attention i.
_BLOCK_ORDER = {"resnets": 0, "attentions": 1, "downsamplers": 2, "upsamplers": 2}
# Containers of mixture-of-experts layers: "mlp.experts.5.gate_proj", "block_sparse_moe.experts.5.w1".
EXPERT_CONTAINERS = ("experts",)


def container_rank(part: str) -> tuple[int, int]:
    """(stage rank, >0 for stage containers; rank among sibling block containers)."""
    return _STAGE_ORDER.get(part, 0), _BLOCK_ORDER.get(part, 0)


# Leading components that task wrappers and PEFT add around the bare model.
WRAPPER_PREFIXES = ("base_model.model.", "model.", "transformer.", "bert.", "roberta.", "gpt_neox.", "backbone.")

# GPT-2 style Conv1D stores weights (in, out), the transpose of nn.Linear (see ``conv1d``): the
# families known without transformers installed.
_GPT2_CONV1D = re.compile(r"(^|\.)(attn|crossattention)\.(c_attn|q_attn|c_proj)$|(^|\.)mlp\.(c_fc|c_proj)$")
_CLVP_CONV1D = re.compile(r"(^|\.)mlp\.(c_fc|c_proj)$")
TRANSPOSED_MODULES: dict[str, re.Pattern] = {
    "gpt2": _GPT2_CONV1D,
    "openai-gpt": _GPT2_CONV1D,
    "imagegpt": _GPT2_CONV1D,
    "decision_transformer": _GPT2_CONV1D,
    "clvp": _CLVP_CONV1D,           # its decoder's MLP only
    "clvp_decoder": _CLVP_CONV1D,
}
# Families with Conv1D-style names (c_attn, c_proj, ...) that are nn.Linear, stored (out, in).
LINEAR_WITH_CONV1D_NAMES = frozenset({"gpt_bigcode"})

# Without a config.json, a name signature (not a shape) identifies the family.
NAME_SIGNATURES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"(^|\.)h\.\d+\.attn\.c_attn\.weight$"), "gpt2"),
)


def infer_model_type(config: dict, names: list[str]) -> str | None:
    if config.get("model_type"):
        return str(config["model_type"])
    for pattern, model_type in NAME_SIGNATURES:
        if any(pattern.search(n) for n in names):
            return model_type
    return None


def is_transposed(model_type: str | None, module_path: str) -> bool:
    """True when the weight at ``module_path`` (name without ``.weight``) is stored (in, out):
    from transformers' modeling source when installed, else from ``TRANSPOSED_MODULES``."""
    derived = conv1d_attributes(model_type) if model_type else None
    if derived is not None:
        return module_path.rsplit(".", 1)[-1] in derived
    pattern = TRANSPOSED_MODULES.get(model_type or "")
    return bool(pattern and pattern.search(module_path))


# Stored 3-D experts ``(E, in, out)`` used as ``x @ W[e]`` (the transformers 5 standard is
# ``(E, out, in)`` with F.linear): the families known without transformers installed.
TRANSPOSED_EXPERTS = frozenset({"llama4", "llama4_text", "gpt_oss"})
# Experts whose fused gate_up output interleaves [gate_0, up_0, gate_1, ...] (gpt-oss), not [gate, up].
INTERLEAVED_GATE_UP = frozenset({"gpt_oss"})


def experts_transposed(model_type: str | None, module_path: str) -> bool:
    """True when a stored 3-D experts tensor at ``module_path`` is ``(E, in, out)``."""
    derived = right_operand_attributes(model_type) if model_type else None
    if derived is not None:
        return module_path.rsplit(".", 1)[-1] in derived
    return (model_type or "") in TRANSPOSED_EXPERTS


# Experts classes declared ``is_transposed=True`` (transformers' ``use_experts_implementation``),
# known without transformers installed. Llama 4's experts are (E, in, out) too but carry no
# such flag: PEFT reads LoRA factors on them as if they were (E, out, in).
FLAGGED_TRANSPOSED_EXPERTS = frozenset({"gpt_oss", "aria", "aria_text", "openai_privacy_filter"})


def experts_flagged_transposed(model_type: str | None) -> bool:
    """The experts module's ``is_transposed`` attribute, by which PEFT's ``ParamWrapper`` takes
    (in, out) from a 3-D parameter (E, d1, d2): (d1, d2) when set, else (d2, d1)."""
    derived = flags_experts_transposed(model_type) if model_type else None
    return derived if derived is not None else (model_type or "") in FLAGGED_TRANSPOSED_EXPERTS


def orientation_notes(config: dict, names: list[str]) -> list[str]:
    """Warnings for Conv1D-style names (``c_attn``, ``c_fc``, ``c_proj``) whose orientation is a
    guess: the model type is unknown here, or was inferred from names without a config.json."""
    styled = [n for n in names if CONV1D_STYLE.search(n.removesuffix(".weight"))]
    if not styled:
        return []
    model_type = infer_model_type(config, names)
    shown = ", ".join(styled[:2]) + (f", ... ({len(styled) - 2} more)" if len(styled) > 2 else "")
    if not config.get("model_type"):
        how = f"assumed {model_type} (in, out)" if model_type else "measured as nn.Linear (out, in)"
        return [f"no model_type in config.json: {len(styled)} tensor(s) with Conv1D-style names ({shown}) {how}; "
                "give the checkpoint's config.json if that is not its layout"]
    known = (model_type in TRANSPOSED_MODULES or model_type in LINEAR_WITH_CONV1D_NAMES
             or conv1d_attributes(model_type) is not None)
    if known:
        return []
    return [f"unknown model_type {model_type!r}: {len(styled)} tensor(s) with Conv1D-style names ({shown}) measured "
            "as nn.Linear (out, in); if they are transformers Conv1D (in, out), their rows are input columns"]


# ---- fused projections -------------------------------------------------------------------------

MAX_HEADS = 4096


class _NoSizes(Exception):
    """config.json gives no usable head counts or sizes (turned into an InputError by the caller)."""


def _heads(cfg: dict) -> tuple[int, int, int]:
    """(num heads, num key/value heads, head dim) under the spellings configs use."""
    attn = cfg.get("attn_config") or {}
    hidden = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model")
    heads = cfg.get("num_attention_heads") or cfg.get("n_head") or cfg.get("n_heads")
    if not hidden or not heads:
        raise _NoSizes("hidden size / head count")
    kv = (cfg.get("num_key_value_heads") or cfg.get("num_kv_heads") or attn.get("kv_n_heads")
          or (1 if cfg.get("multi_query") else heads))
    sizes = heads, kv, cfg.get("head_dim") or hidden // heads
    # config.json is input: per-head segment lists must stay small whatever it says.
    # Key/value heads are a subset of the heads (Falcon's grouped layout has one segment per group).
    if not all(isinstance(n, int) and 0 < n for n in sizes) or heads > MAX_HEADS or kv > heads:
        raise _NoSizes("head counts")
    return sizes


def _contiguous_qkv(cfg: dict, rows: int) -> list[tuple[str, int]]:
    h, kv, d = _heads(cfg)
    return [("q", h * d), ("k", kv * d), ("v", kv * d)]


def _per_head_qkv(cfg: dict, rows: int) -> list[tuple[str, int]]:
    # GPT-NeoX / BLOOM / GPTBigCode without multi_query interleave per head:
    # [q_0 k_0 v_0 q_1 k_1 v_1 ...], head_dim rows each.
    h, _, d = _heads(cfg)
    return [(g, d) for _ in range(h) for g in ("q", "k", "v")]


def _falcon_qkv(cfg: dict, rows: int) -> list[tuple[str, int]]:
    h, kv, d = _heads(cfg)
    if not cfg.get("new_decoder_architecture"):
        return _contiguous_qkv(cfg, rows) if cfg.get("multi_query", True) else _per_head_qkv(cfg, rows)
    # Grouped layout: for each kv group, its q heads, then one k head, then one v head.
    per_group = h // kv
    return [seg for _ in range(kv) for seg in [("q", per_group * d), ("k", d), ("v", d)]]


def _bigcode_qkv(cfg: dict, rows: int) -> list[tuple[str, int]]:
    # multi_query: [q (all heads), k, v]; otherwise per head like GPT-NeoX.
    return _contiguous_qkv(cfg, rows) if cfg.get("multi_query", True) else _per_head_qkv(cfg, rows)


CODEGEN_SHARDS = 4   # CodeGenAttention.mp_num, a constant of the model code


def _codegen_qkv(cfg: dict, rows: int) -> list[tuple[str, int]]:
    # CodeGen views the output as 4 shards, each [q, v, k] (note the order), rows/12 rows each.
    local = rows // (3 * CODEGEN_SHARDS)
    return [seg for _ in range(CODEGEN_SHARDS) for seg in [("q", local), ("v", local), ("k", local)]]


def _gate_up(cfg: dict, rows: int) -> list[tuple[str, int]]:
    # Phi-3 / GLM MLPs: gate_up.chunk(2): [gate, up].
    return [("gate", rows // 2), ("up", rows - rows // 2)]


@dataclass(frozen=True)
class FusedSpec:
    """How the output rows of a fused weight split into named groups; the layout comes from
    each model's forward code (tests check it against the model built in transformers)."""

    leaf: str
    segments: Callable[[dict, int], list[tuple[str, int]]]
    model_types: frozenset[str]


_GPT2_FAMILY = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})
FUSED: tuple[FusedSpec, ...] = (
    FusedSpec("c_attn", _contiguous_qkv, _GPT2_FAMILY),
    FusedSpec("c_attn", _bigcode_qkv, frozenset({"gpt_bigcode"})),
    FusedSpec("query_key_value", _falcon_qkv, frozenset({"falcon", "RefinedWeb", "RefinedWebModel"})),
    FusedSpec("query_key_value", _per_head_qkv, frozenset({"gpt_neox", "bloom", "persimmon"})),
    FusedSpec("Wqkv", _contiguous_qkv, frozenset({"mpt"})),
    FusedSpec("qkv_proj", _contiguous_qkv, frozenset({"phi3"})),
    FusedSpec("qkv_proj", _codegen_qkv, frozenset({"codegen"})),
    FusedSpec("gate_up_proj", _gate_up, frozenset({"phi3", "glm", "glm4"})),
)
# Leaf names of fused projections in some family: with --split-fused, one whose layout the
# table does not give for this model type is refused rather than split by a guess.
FUSED_LEAVES = frozenset({spec.leaf for spec in FUSED} | {"qkv", "W_pack", "in_proj", "c_attn"})


def fused_groups(model_type: str | None, module_path: str, config: dict, rows: int, expert: bool = False
                 ) -> list[tuple[str, slice | list[int]]] | None:
    """Row groups ``[(name, rows)]`` of a fused weight with ``rows`` output rows, or None for a
    weight that is not fused.

    ``expert``: one expert's slice of a stored 3-D experts tensor; transformers 5's
    ``experts.gate_up_proj`` is ``[gate, up]`` (``chunk(2)``), gpt-oss interleaves them. Row
    sets are slices when contiguous, index lists otherwise.
    Raises ``InputError`` for a fused leaf whose layout for ``model_type`` is not known, or
    whose config does not give sizes that add up to ``rows``.
    """
    leaf = module_path.rsplit(".", 1)[-1]
    if expert:
        return _expert_gate_up(model_type, leaf, module_path, rows)
    if leaf not in FUSED_LEAVES:
        return None
    spec = next((s for s in FUSED if s.leaf == leaf and (model_type or "") in s.model_types), None)
    if spec is None:
        raise InputError(f"split_fused: no known row layout of {leaf!r} for model type {model_type!r} "
                         f"({module_path}); compare without split_fused")
    try:
        segments = spec.segments(config, rows)
    except (_NoSizes, TypeError, ZeroDivisionError):   # TypeError: a count that is not a number
        segments = []
    # config.json is input: sizes must be positive integers that add up to the stored rows.
    if (not segments or not all(isinstance(n, int) and n > 0 for _, n in segments)
            or sum(n for _, n in segments) != rows):
        raise InputError(f"split_fused: config.json does not give the {rows} rows of {module_path} "
                         f"(head counts and sizes of model type {model_type!r}); compare without split_fused")
    return _group_rows(segments)


def _expert_gate_up(model_type: str | None, leaf: str, module_path: str, rows: int
                    ) -> list[tuple[str, slice | list[int]]] | None:
    if leaf != "gate_up_proj":
        return None
    if rows % 2:
        raise InputError(f"split_fused: {module_path} has {rows} output rows per expert, not [gate, up]")
    if (model_type or "") in INTERLEAVED_GATE_UP:
        return _group_rows([seg for _ in range(rows // 2) for seg in [("gate", 1), ("up", 1)]])
    return _group_rows([("gate", rows // 2), ("up", rows // 2)])


def _group_rows(segments: list[tuple[str, int]]) -> list[tuple[str, slice | list[int]]]:
    spans: dict[str, list[tuple[int, int]]] = {}
    start = 0
    for name, n in segments:
        spans.setdefault(name, []).append((start, start + n))
        start += n
    groups: list[tuple[str, slice | list[int]]] = []
    for name, ranges in spans.items():
        if len(ranges) == 1:
            groups.append((name, slice(*ranges[0])))
        else:
            groups.append((name, [i for a, b in ranges for i in range(a, b)]))
    return groups
