"""Per-architecture facts as tables, looked up by config.json's ``model_type`` and module name.

Add an architecture by adding rows here, not branches elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

# Components that hold the numbered transformer blocks: "model.layers.3.", "h.3.", "encoder.layer.3.",
# T5's "block.3.", ViT/CLIP "blocks.3.".
LAYER_CONTAINERS = ("layers", "layer", "h", "blocks", "block")

# Leading components that task wrappers and PEFT add around the bare model.
WRAPPER_PREFIXES = ("base_model.model.", "model.", "transformer.", "bert.", "roberta.", "gpt_neox.", "backbone.")

# GPT-2 style Conv1D stores weights (in, out), the transpose of nn.Linear. Which modules are
# Conv1D is a fact about the model class, so it is looked up by model_type, never guessed from
# the shape (a square c_proj looks exactly like a Linear).
_GPT2_CONV1D = re.compile(r"(^|\.)(attn|crossattention)\.(c_attn|q_attn|c_proj)$|(^|\.)mlp\.(c_fc|c_proj)$")
TRANSPOSED_MODULES: dict[str, re.Pattern] = {
    "gpt2": _GPT2_CONV1D,
    "openai-gpt": _GPT2_CONV1D,
    "imagegpt": _GPT2_CONV1D,
    "decision_transformer": _GPT2_CONV1D,
}

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
    """True when the weight at ``module_path`` (name without ``.weight``) is stored (in, out)."""
    pattern = TRANSPOSED_MODULES.get(model_type or "")
    return bool(pattern and pattern.search(module_path))


# ---- fused projections -------------------------------------------------------------------------

MAX_HEADS = 4096


def _heads(cfg: dict) -> tuple[int, int, int]:
    """(num heads, num key/value heads, head dim) under the spellings configs use."""
    attn = cfg.get("attn_config") or {}
    hidden = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model")
    heads = cfg.get("num_attention_heads") or cfg.get("n_head") or cfg.get("n_heads")
    if not hidden or not heads:
        raise KeyError("hidden size / head count")
    kv = (cfg.get("num_key_value_heads") or cfg.get("num_kv_heads") or attn.get("kv_n_heads")
          or (1 if cfg.get("multi_query") else heads))
    sizes = heads, kv, cfg.get("head_dim") or hidden // heads
    # config.json is input: per-head segment lists must stay small whatever it says.
    if not all(isinstance(n, int) and 0 < n for n in sizes) or heads > MAX_HEADS:
        raise KeyError("head counts")
    return sizes


def _contiguous_qkv(cfg: dict) -> list[tuple[str, int]]:
    h, kv, d = _heads(cfg)
    return [("q", h * d), ("k", kv * d), ("v", kv * d)]


def _per_head_qkv(cfg: dict) -> list[tuple[str, int]]:
    # GPT-NeoX / BLOOM interleave per head: [q_0 k_0 v_0 q_1 k_1 v_1 ...], head_dim rows each.
    h, _, d = _heads(cfg)
    return [(g, d) for _ in range(h) for g in ("q", "k", "v")]


def _falcon_qkv(cfg: dict) -> list[tuple[str, int]]:
    h, kv, d = _heads(cfg)
    if not cfg.get("new_decoder_architecture"):
        return _contiguous_qkv(cfg) if cfg.get("multi_query", True) else _per_head_qkv(cfg)
    # Grouped layout: for each kv group, its q heads, then one k head, then one v head.
    per_group = h // kv
    return [seg for _ in range(kv) for seg in [("q", per_group * d), ("k", d), ("v", d)]]


def _gate_up(cfg: dict) -> list[tuple[str, int]]:
    inter = cfg["intermediate_size"]
    return [("gate", inter), ("up", inter)]


@dataclass(frozen=True)
class FusedSpec:
    """How the output rows of a fused weight split into named groups."""

    leaf: str
    segments: Callable[[dict], list[tuple[str, int]]]
    model_types: frozenset[str] | None = None  # None: any model type


FUSED: tuple[FusedSpec, ...] = (
    FusedSpec("c_attn", _contiguous_qkv),
    FusedSpec("query_key_value", _falcon_qkv, frozenset({"falcon", "RefinedWeb", "RefinedWebModel"})),
    FusedSpec("query_key_value", _per_head_qkv, frozenset({"gpt_neox", "bloom", "persimmon"})),
    FusedSpec("Wqkv", _contiguous_qkv),
    FusedSpec("qkv_proj", _contiguous_qkv),
    FusedSpec("gate_up_proj", _gate_up),
)


def fused_groups(model_type: str | None, module_path: str, config: dict, rows: int) -> list[tuple[str, slice | list[int]]] | None:
    """Row groups ``[(name, rows)]`` of a fused weight with ``rows`` output rows, or None.

    None means "not a fused weight we know" or the config lacks what the split needs; callers
    then report the tensor whole. Row sets are slices when contiguous, index lists otherwise.
    """
    leaf = module_path.rsplit(".", 1)[-1]
    for spec in FUSED:
        if spec.leaf != leaf or (spec.model_types is not None and (model_type or "") not in spec.model_types):
            continue
        try:
            segments = spec.segments(config)
        except (KeyError, TypeError, ZeroDivisionError):
            return None
        # config.json is input: sizes must be positive integers that add up to the stored rows.
        if not all(isinstance(n, int) and n > 0 for _, n in segments) or sum(n for _, n in segments) != rows:
            return None
        return _group_rows(segments)
    return None


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
