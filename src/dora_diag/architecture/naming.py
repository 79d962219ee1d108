"""Where a tensor sits (stack, layer, module type, expert) from its name, and base <-> fine-tuned
name matching.

A name is read as ``<wrappers>.<stack>.<layer containers>.<in-layer path>``:
``model.vision_tower.encoder.layers.3.self_attn.q_proj.weight`` -> stack
"vision_tower.encoder", layer 3, module "q_proj". Layer containers may nest (ResNet
``stages.1.layers.0``, a UNet's ``down_blocks.2.attentions.1``): the layer is then the block's
depth index in forward order within its stack. Whatever the names, no two tensors of one
checkpoint share (stack, layer, module, expert).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .registry import (EXPERT_CONTAINERS, LAYER_CONTAINERS, SUBLAYER_CONTAINERS, UNNUMBERED_STAGES,
                       WRAPPER_PREFIXES, container_rank)

Level = tuple[int, int, int, str]   # sort key of one container level: (stage rank, index, block rank, name)


@dataclass(frozen=True)
class TensorName:
    """One weight name split into where it sits (see the module docstring)."""

    name: str
    stack: str                  # dotted prefix before the layer containers ("" at the root)
    levels: tuple[Level, ...]   # the layer containers, outermost first; () outside layers
    path: str                   # in-layer path with its container ("layers.self_attn.q_proj"), or the bare path
    expert: int | None          # index in an ``experts.N`` container


@dataclass(frozen=True)
class Place:
    """Where a tensor is reported: ``module`` carries the stack when a checkpoint has several."""

    stack: str
    layer: int | None
    module: str
    expert: int | None = None


def _strip_wrappers(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return name


def _is_layer_container(part: str, outermost: bool) -> bool:
    # Singular "layer"/"block" right inside another container are sub-layers (T5's
    # ``block.N.layer.M``, ResNet's ``layers.N.layer.M``): they belong to the module's identity.
    if not outermost and part in SUBLAYER_CONTAINERS:
        return False
    return part in LAYER_CONTAINERS or part.endswith(("_blocks", "_layers")) or container_rank(part)[0] > 0


def _levels(parts: list[str]) -> tuple[int, int, list[Level]]:
    """(start, end, levels) of the run of layer containers in ``parts``; start == end: none."""
    for start, part in enumerate(parts):
        if part in UNNUMBERED_STAGES or (_numbered(parts, start) and _is_layer_container(part, True)):
            break
    else:
        return len(parts), len(parts), []
    levels: list[Level] = []
    i = start
    while i < len(parts):
        part = parts[i]
        stage, block = container_rank(part)
        if part in UNNUMBERED_STAGES:
            levels.append((stage, -1, block, part))
            i += 1
        elif _numbered(parts, i) and _is_layer_container(part, not levels):
            levels.append((stage, int(parts[i + 1]), block, part))
            i += 2
        else:
            break
    return start, i, levels


def _numbered(parts: list[str], i: int) -> bool:
    # ASCII digits only ("²".isdigit() but int() refuses it), and few enough for an int64 column:
    # an absurd layer number is then part of the module name instead of crashing the table.
    return i + 1 < len(parts) and parts[i + 1].isascii() and parts[i + 1].isdigit() and len(parts[i + 1]) <= 18


def parse_name(name: str) -> TensorName:
    bare = _strip_wrappers(name)
    bare = bare[: -len(".weight")] if bare.endswith(".weight") else bare
    parts = bare.split(".")
    start, end, levels = _levels(parts)
    rest, expert = _pop_expert(parts[end:] if levels else parts)
    if not levels:
        return TensorName(name, "", (), ".".join(rest), expert)
    # The innermost container's name keeps a UNet's resnets and attentions apart.
    return TensorName(name, ".".join(parts[:start]), tuple(levels), ".".join([levels[-1][3], *rest]), expert)


def _pop_expert(parts: list[str]) -> tuple[list[str], int | None]:
    for i, part in enumerate(parts):
        if part in EXPERT_CONTAINERS and _numbered(parts, i):
            return parts[: i + 1] + parts[i + 2:], int(parts[i + 1])
    return parts, None


def module_namer(names: list[str]) -> dict[str, Place]:
    """``{tensor name: Place}`` for every name.

    The module is the shortest dotted suffix of the in-layer path that is unambiguous in this
    checkpoint: LLaMA's ``self_attn.q_proj`` -> ``q_proj``, but GPT-2 keeps ``attn.c_proj`` and
    ``mlp.c_proj`` apart. Checkpoints with several stacks (T5, BART, CLIP's towers) prefix it
    with a short stack label. Experts of one MoE layer share the module (pooled in the fits).
    """
    parsed = [parse_name(n) for n in names]
    in_layer = [p for p in parsed if p.levels]
    stacks = sorted({p.stack for p in in_layer})
    labels = _stack_labels(stacks)
    short = _module_types({p.path for p in in_layer})
    layer_of = _layer_numbers(in_layer)
    out: dict[str, Place] = {}
    for p in parsed:
        if not p.levels:
            out[p.name] = Place("", None, p.path, p.expert)
            continue
        label = labels[p.stack]
        module = f"{label}.{short[p.path]}" if label else short[p.path]
        out[p.name] = Place(p.stack, layer_of[(p.stack, p.levels)], module, p.expert)
    return out


def _layer_numbers(parsed: list[TensorName]) -> dict[tuple[str, tuple[Level, ...]], int]:
    """Layer per (stack, levels): the container's own index for a flat stack (``layers.7`` is
    layer 7 even when layers 0-6 are absent), else the depth index of the block in forward
    order (stage rank, then indices outermost first)."""
    by_stack: dict[str, set[tuple[Level, ...]]] = {}
    for p in parsed:
        by_stack.setdefault(p.stack, set()).add(p.levels)
    out = {}
    for stack, keys in by_stack.items():
        flat = len({(len(k), k[0][0], k[0][3]) for k in keys}) == 1 and all(len(k) == 1 for k in keys)
        for depth, key in enumerate(sorted(keys)):
            out[(stack, key)] = key[0][1] if flat else depth
    return out


def _stack_labels(stacks: list[str]) -> dict[str, str]:
    """Short distinct labels: parts shared by every stack at the start or end are dropped
    (CLIP's ``text_model.encoder`` / ``vision_model.encoder`` -> ``text_model`` / ``vision_model``)."""
    if len(stacks) < 2:
        return {s: "" for s in stacks}
    split = [s.split(".") if s else [] for s in stacks]
    shortest = min(len(p) for p in split)
    lead = next((i for i in range(shortest) if len({tuple(p[: i + 1]) for p in split}) > 1), shortest)
    trail = next((i for i in range(shortest - lead) if len({p[len(p) - i - 1] for p in split}) > 1), shortest - lead)
    return {s: ".".join(p[lead: len(p) - trail]) or s for s, p in zip(stacks, split)}


def _module_types(paths: set[str]) -> dict[str, str]:
    """Module type per in-layer path (``container.rest``): the shortest unique suffix of the
    rest; the container is kept only where two containers hold the same rest (a UNet's
    ``downsamplers.conv`` and ``upsamplers.conv``)."""
    rest = {p: p.split(".", 1)[1] if "." in p else p for p in paths}
    holders: dict[str, int] = {}
    for r in rest.values():
        holders[r] = holders.get(r, 0) + 1
    short = _shortest_unique_suffixes(sorted(set(rest.values())))
    return {p: p if holders[r] > 1 else short[r] for p, r in rest.items()}


def _shortest_unique_suffixes(paths: list[str]) -> dict[str, str]:
    """Distinct paths get distinct suffixes; a suffix never starts at an index (``layer.1.x``,
    not ``1.x``). Linear in the total length: a checkpoint may have 10^5 distinct paths."""
    holders: dict[str, int] = {}
    for path in paths:
        parts = path.split(".")
        for k in range(1, len(parts) + 1):
            suffix = ".".join(parts[-k:])
            holders[suffix] = holders.get(suffix, 0) + 1
    result = {}
    for path in paths:
        parts = path.split(".")
        for k in range(1, len(parts) + 1):
            suffix = ".".join(parts[-k:])
            if not parts[-k].isdigit() and holders[suffix] == 1:
                break
        result[path] = suffix
    return result


def _suffixes(name: str) -> list[str]:
    """Dotted suffixes, longest first; a bare leaf ("weight") names no module and is left out."""
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(max(1, len(parts) - 1))]


def match_names(base: list[str], other: list[str], rename: Callable[[str], str] | None = None) -> dict[str, str]:
    """Map base names to names in ``other``, tolerating wrapper prefixes on either side.

    ``bert.encoder.layer.0.attention.self.query.weight`` matches ``encoder.layer.0...`` and
    ``model.layers.0...`` matches ``layers.0...``. Exact names win; otherwise the longest common
    dotted suffix that is a whole name on one side and unique on both sides. ``rename`` maps a
    base name to the name the model class uses in memory (``architecture.renames``): names
    still unmatched are matched again through it.
    """
    result = _match(base, other)
    if rename is None or len(result) == len(base) or len(result) == len(other):
        return result
    used = set(result.values())
    renamed: dict[str, str | None] = {}
    for b in base:
        if b not in result:
            new = rename(b)
            renamed[new] = None if new in renamed else b   # two base names, one new name: ambiguous
    unique = {new: b for new, b in renamed.items() if b is not None}
    second = _match(list(unique), [o for o in other if o not in used])
    result.update({unique[new]: o for new, o in second.items()})
    return result


def _match(base: list[str], other: list[str]) -> dict[str, str]:
    other_set = set(other)
    result = {b: b for b in base if b in other_set}
    if len(result) == len(base):
        return result
    base_by_suffix = _unique_suffix_index([b for b in base if b not in result])
    used = set(result.values())
    other_by_suffix = _unique_suffix_index([o for o in other if o not in used])
    for o in other:
        if o in used:
            continue
        for suffix in _suffixes(o):
            b = base_by_suffix.get(suffix)
            if b is not None and b not in result and (suffix == b or suffix == o or other_by_suffix.get(suffix) == o):
                result[b] = o
                used.add(o)
                break
    return result


def _unique_suffix_index(names: list[str]) -> dict[str, str]:
    """Dotted suffix -> name, keeping only suffixes that belong to exactly one name."""
    index: dict[str, str | None] = {}
    for n in names:
        for s in _suffixes(n):
            index[s] = None if s in index and index[s] != n else n
    return {s: n for s, n in index.items() if n is not None}
