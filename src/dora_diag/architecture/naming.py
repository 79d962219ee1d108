"""Layer index and module type from tensor names, and base <-> fine-tuned name matching."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .registry import LAYER_CONTAINERS, WRAPPER_PREFIXES

_LAYER = re.compile(r"(?:^|\.)(?:%s)\.(\d+)\." % "|".join(LAYER_CONTAINERS))
_STACKS = ("encoder", "decoder", "vision_model", "text_model")


@dataclass(frozen=True)
class TensorName:
    """A weight name split into where it sits: ``model.layers.3.self_attn.q_proj.weight`` ->
    stack "", layer 3, path "self_attn.q_proj"."""

    name: str
    layer: int | None
    path: str     # module path inside the layer (or the whole module path outside layers)
    stack: str    # "encoder"/"decoder"/... for models with several stacks, else ""

    @property
    def module_path(self) -> str:
        """The module's full dotted path, i.e. the name without ``.weight``."""
        return self.name[: -len(".weight")] if self.name.endswith(".weight") else self.name


def _strip_wrappers(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return name


def parse_name(name: str) -> TensorName:
    bare = _strip_wrappers(name)
    bare = bare[: -len(".weight")] if bare.endswith(".weight") else bare
    m = _LAYER.search(bare + ".")
    if not m:
        return TensorName(name, None, bare, "")
    head, tail = bare[: m.start()], bare[m.end():]
    stack = next((s for s in _STACKS if s in head.split(".")), "")
    # Numbered sub-blocks inside a layer (T5's "layer.1.") carry no module identity.
    path = ".".join(part for part in tail.split(".") if not part.isdigit())
    return TensorName(name, int(m.group(1)), path, stack)


def module_namer(names: list[str]) -> dict[str, tuple[int | None, str]]:
    """``{tensor name: (layer, module)}`` for every name.

    The module is the shortest dotted suffix of the in-layer path that is unambiguous in this
    checkpoint: LLaMA's ``self_attn.q_proj`` -> ``q_proj``, but GPT-2 keeps ``attn.c_proj`` and
    ``mlp.c_proj`` apart. Models with several stacks (T5, BART) get a stack prefix.
    """
    parsed = [parse_name(n) for n in names]
    multi_stack = len({p.stack for p in parsed if p.layer is not None}) > 1
    in_layer = sorted({p.path for p in parsed if p.layer is not None})
    short = _shortest_unique_suffixes(in_layer)
    out: dict[str, tuple[int | None, str]] = {}
    for p in parsed:
        if p.layer is None:
            out[p.name] = (None, p.path)
        else:
            module = short[p.path]
            out[p.name] = (p.layer, f"{p.stack}.{module}" if multi_stack and p.stack else module)
    return out


def _shortest_unique_suffixes(paths: list[str]) -> dict[str, str]:
    result = {}
    for path in paths:
        parts = path.split(".")
        for k in range(1, len(parts) + 1):
            suffix = ".".join(parts[-k:])
            if sum(1 for other in paths if other == suffix or other.endswith("." + suffix)) == 1:
                break
        result[path] = suffix
    return result


def _suffixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def match_names(base: list[str], other: list[str]) -> dict[str, str]:
    """Map base names to names in ``other``, tolerating wrapper prefixes on either side.

    ``bert.encoder.layer.0.attention.self.query.weight`` matches ``encoder.layer.0...`` and
    ``model.layers.0...`` matches ``layers.0...``. Exact names win; otherwise the longest common
    dotted suffix that is a whole name on one side and unique on both sides.
    """
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
