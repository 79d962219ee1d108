"""PEFT LoRA on raw parameters (``target_parameters``, PEFT's ``ParamWrapper``) mapped onto base tensors.

PEFT wraps each targeted parameter of a module in a ``ParamWrapper``; several on one module
nest, so their factors are saved as ``M.lora_A.weight`` (outermost), ``M.base_layer.lora_A.weight``,
... with nothing in the file naming the parameter: it is found here as the one target of M whose
shape the factors fit. For a parameter of shape (E, d1, d2) (``experts.gate_up_proj``) PEFT
takes in, out = d2, d1, or d1, d2 where the experts module says ``is_transposed``
(``architecture.registry.experts_flagged_transposed``: gpt-oss, not Llama 4, although both are
used as ``x @ W[e]``); A is (r·E, in) and B (out, r·E), expert e's ΔW_e = s·B_e @ A_e
(``metrics.lowrank.expert_factors``), added to the stored [e] as (out, in). A 2-D parameter is
(out, in), E = 1. Which axis is measured as channels is ``architecture.orientation``'s, as for
every reader.

Checkpoints that store the fused parameter as per-expert matrices
(``architecture.experts.split_experts``) get one entry per expert and part, each with its
rows of ΔW_e: rows, columns and ``expert`` exactly as the merged model's saved tensors. A base
that stores the 3-D parameter itself gets one entry per expert slice ``name[e]`` (stored
(ΔW_e, or ΔW_eᵀ where PEFT reads (E, in, out)), measured like stored 3-D experts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from ..architecture import match_names
from ..architecture.experts import split_experts
from ..architecture.registry import experts_flagged_transposed
from ..errors import InputError, UnsupportedError
from .peft_config import PeftConfig
from .peft_keys import AdapterModule
from .safetensors_file import TensorInfo

WRAPPED = re.compile(r"\.base_layer(?=\.|$)")


@dataclass(frozen=True)
class ExpertPart:
    """Rows ``start:stop`` of expert ``expert``'s ΔW (out, in) of an E-expert ``ParamWrapper``."""

    experts: int
    expert: int
    start: int
    stop: int


@dataclass(frozen=True)
class ParamTarget:
    """One base tensor changed by a ``ParamWrapper`` module."""

    module: AdapterModule
    parameter: str       # the in-memory parameter name PEFT targeted (rank_pattern key)
    base_name: str
    part: ExpertPart
    stacked: bool = False     # the base stores the 3-D parameter: ``part`` is its [expert] slice
    transposed: bool = False  # PEFT reads the parameter as (E, in, out): the slice changes by ΔW_eᵀ


@dataclass(frozen=True)
class _Param:
    """A targetable parameter as the model holds it in memory, and the base tensors that store it."""

    shape: tuple[int, ...]
    stored: tuple[tuple[tuple[str, int], ...], ...]   # per expert, (base name, rows) in row order
    per_expert: bool = False                          # stored as per-expert matrices (``split_experts``)


def owner(path: str) -> str:
    """The module a (possibly nested) ``ParamWrapper`` path wraps: every ``.base_layer`` removed."""
    return WRAPPED.sub("", path)


def targeted(owner_path: str, targets: tuple[str, ...]) -> list[str]:
    """The parameter names of ``owner_path`` that PEFT's ``target_parameters`` match (exact, or a
    dotted suffix: ``experts.gate_up_proj``), sorted."""
    names = {f"{owner_path}.{t.rpartition('.')[2]}" for t in targets}
    return sorted(n for n in names if any(n == t or n.endswith(f".{t}") for t in targets))


def param_targets(where: str, config: PeftConfig, modules: dict[str, AdapterModule], base: dict[str, TensorInfo],
                  model_type: str | None, rename: Callable[[str], str]
                  ) -> tuple[dict[str, AdapterModule], list[ParamTarget], list[AdapterModule]]:
    """(modules that are ordinary LoRA layers, base tensors changed by ``ParamWrapper`` modules,
    ``ParamWrapper`` modules whose parameter the base does not have)."""
    if not config.target_parameters:
        return modules, [], []
    plain = {}
    chains: dict[str, list[AdapterModule]] = {}
    for path, m in modules.items():
        if m.factors is not None and not m.is_embedding and targeted(owner(path), config.target_parameters):
            chains.setdefault(owner(path), []).append(m)
        else:
            plain[path] = m
    params = _parameters(base, model_type)
    wanted = [n for o in chains for n in targeted(o, config.target_parameters)]
    found = {v: k for k, v in match_names(list(params), wanted, rename).items()}
    out, unmatched = [], []
    for owner_path, chain in chains.items():
        names = [n for n in targeted(owner_path, config.target_parameters) if n in found]
        taken: set[str] = set()
        for m in chain:
            if not names:
                unmatched.append(m)
                continue
            name = _fitting(where, config, m, names, {n: params[found[n]] for n in names}, model_type)
            if name in taken:   # PEFT wraps each parameter once per adapter
                raise InputError(f"{where}: {owner_path}: two modules' factors both fit only {name}")
            taken.add(name)
            param = params[found[name]]
            out.extend(_split(where, m, name, param, _transposed(model_type, param.shape)))
    return plain, out, unmatched


def _parameters(base: dict[str, TensorInfo], model_type: str | None) -> dict[str, _Param]:
    """Every 2-D/3-D base tensor as a parameter, and each fused experts parameter the base
    stores per expert, shaped (E, sum of part rows, cols)."""
    splits = split_experts(list(base), model_type)
    # Per-expert matrices are only parts: they rename to their fused parameter too (ambiguous).
    parts = {n for split in splits.values() for p in split.parts for n in p}
    params = {n: _Param(i.shape, (((n, i.shape[-2]),),)) for n, i in base.items()
              if len(i.shape) in (2, 3) and n not in parts}
    for name, split in splits.items():
        first = [base[n].shape for n in split.parts[0]]
        if all(len(s) == 2 for s in first) and len({s[1] for s in first}) == 1 and all(
                [base[n].shape for n in p] == first for p in split.parts):
            stored = tuple(tuple((n, base[n].shape[0]) for n in p) for p in split.parts)
            params.setdefault(name, _Param((len(split.parts), sum(s[0] for s in first), first[0][1]), stored, True))
    return params


def _transposed(model_type: str | None, shape: tuple[int, ...]) -> bool:
    """Whether PEFT reads the 3-D parameter as (E, in, out): by the experts module's own flag, not by
    how the forward uses it (``orientation``, which decides the measured axis); a 2-D one is (out, in)."""
    return len(shape) == 3 and experts_flagged_transposed(model_type)


def _in_out(shape: tuple[int, ...], transposed: bool) -> tuple[int, int, int]:
    """(experts, in, out) of a parameter as PEFT's ``ParamWrapper`` reads its shape."""
    if len(shape) == 2:
        return 1, shape[1], shape[0]
    e, d1, d2 = shape
    return (e, d1, d2) if transposed else (e, d2, d1)


def _fitting(where: str, config: PeftConfig, m: AdapterModule, names: list[str], params: dict[str, _Param],
             model_type: str | None) -> str:
    """The one targeted parameter whose shape the module's factors fit."""
    A, B = m.factors
    fits = []
    for name in names:
        shape = params[name].shape
        experts, n_in, n_out = _in_out(shape, _transposed(model_type, shape))
        r = config.rank_and_scale(name)[0] * experts
        if tuple(A.shape) == (r, n_in) and tuple(B.shape) == (n_out, r):
            fits.append(name)
    if len(fits) != 1:
        shapes = ", ".join(f"{n} {list(params[n].shape)}" for n in names)
        what = "fit none" if not fits else f"fit {len(fits)}"
        raise InputError(f"{where}: {m.path}: factors {list(A.shape)} x {list(B.shape)} {what} of the targeted "
                         f"parameters ({shapes}); was the adapter trained on this base model with this config?")
    return fits[0]


def _split(where: str, m: AdapterModule, name: str, param: _Param, transposed: bool) -> list[ParamTarget]:
    """One target per stored base tensor of the parameter."""
    experts = 1 if len(param.shape) == 2 else param.shape[0]
    if len(param.shape) == 3 and not param.per_expert:
        if transposed and experts == 1:   # PEFT adds this one expert's B·A (out, in) untransposed
            raise UnsupportedError(f"{where}: {m.path}: LoRA on the single (1, in, out) expert {name} is not read")
        rows = param.shape[2] if transposed else param.shape[1]
        return [ParamTarget(m, name, param.stored[0][0][0], ExpertPart(experts, e, 0, rows), True, transposed)
                for e in range(experts)]
    if transposed:   # per-expert nn.Linear weights are (out, in): a fused (E, in, out) is not their stack
        raise InputError(f"{where}: {m.path}: {name} is (E, in, out) in memory but stored per expert")
    out = []
    for e, stored in enumerate(param.stored):
        start = 0
        for base_name, rows in stored:
            out.append(ParamTarget(m, name, base_name, ExpertPart(experts, e, start, start + rows)))
            start += rows
    return out


def expert_name(name: str, expert: int) -> str:
    """Expert ``expert``'s slice of the stored 3-D tensor ``name`` (as ``analysis.views.expert_slice`` names it)."""
    return f"{name}[{expert}]"


class ExpertView:
    """One expert slice of a stored 3-D experts tensor an adapter changes: a ``FineTunedSource``
    for one plan target, computing through the adapter source (which counts and closes)."""

    stored = parallel_safe = False
    skipped: tuple[dict, ...] = ()
    magnitude_axes: tuple[str, ...] = ()

    def __init__(self, source, info: TensorInfo):
        self.kind, self.method, self.config = source.kind, source.method, source.config
        self.info, self._source = info, source

    def infos(self) -> dict[str, TensorInfo]:
        return {self.info.name: self.info}

    def rows(self, name, base_rows, start, stop, out=None):
        return self._source.rows(name, base_rows, start, stop)

    def channel_sums(self, name, base_rows, start, stop, axis):
        return self._source.channel_sums(name, base_rows, start, stop, axis)

    def rank_and_scale(self, name):
        return self._source.rank_and_scale(name)

    def drop_behind(self) -> None:
        """The adapter source reads its factors whole: nothing to drop."""

    def bytes_read(self) -> int:
        return 0

    def close(self) -> None:
        """The adapter source is closed by whoever opened it."""
