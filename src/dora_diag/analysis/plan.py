"""Decide, before reading any data, which base tensor is compared with what.

A ``TensorPlan`` per comparable base tensor lists the fine-tuned tensors it is streamed
against; everything not compared is recorded with a reason (skipped) or as unmatched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..architecture import fused_groups, match_names, module_namer
from ..architecture.naming import Place
from ..architecture.orientation import stored_transposed
from ..architecture.registry import infer_model_type, orientation_notes
from ..architecture.renames import renamer
from ..errors import InputError
from ..io.checkpoint import Checkpoint
from ..io.fp8 import Fp8Scale, find_scale, scale_names
from ..io.runs import CheckpointRef
from ..io.safetensors_file import TensorInfo
from ..io.sources import FineTunedSource
from .views import StoredView, as_vectors, can_view, expert_slice, expert_target, is_experts_stack, is_vector_stack


@dataclass
class Target:
    """One fine-tuned checkpoint's tensor to compare with the base tensor."""

    ref: CheckpointRef
    source: FineTunedSource
    name: str
    rows: int                 # stored rows shared with the base (fewer when a vocab was resized)
    flags: tuple[str, ...] = ()
    scale: Fp8Scale | None = None   # fp8 weights: dequantized with this while streaming


@dataclass
class TensorPlan:
    info: TensorInfo          # as measured: N-D non-conv tensors as 2-D vector rows (``views``)
    layer: int | None
    module: str
    transposed: bool          # stored (in, out): output channels are the stored columns
    groups: list[tuple[str, slice | list[int]]] | None
    targets: list[Target] = field(default_factory=list)
    scale: Fp8Scale | None = None
    stack: str = ""           # the dotted prefix before the layer containers (naming.TensorName)
    expert: int | None = None
    view: str = ""            # "vectors": ``info`` is ``views.as_vectors`` of the stored tensor;
                              # "experts": a stored experts stack, planned as one plan per expert

    @property
    def out_features(self) -> int:
        return self.info.shape[1] if self.transposed else self.info.shape[0]

    @property
    def in_features(self) -> int:
        return self.info.shape[0] if self.transposed else self.info.row_elements


@dataclass
class Plan:
    tensors: list[TensorPlan]
    skipped: list[dict]       # base tensors not compared: {"tensor", "reason"}
    unmatched: list[dict]     # {"run", "checkpoint", "tensor", "side": "base"|"finetuned"}
    unscaled: list[str] = field(default_factory=list)   # fp8 weights compared without their scale
    notes: list[str] = field(default_factory=list)      # architecture warnings (orientation guesses)


def skip_reason(info: TensorInfo) -> str | None:
    if not info.is_float:
        return f"non-float dtype {info.dtype}"
    if len(info.shape) < 2:
        return f"{len(info.shape)}-D tensor (norms, biases and scalars have no channels)"
    if 0 in info.shape:
        return "empty tensor"
    return None


def make_plan(base: Checkpoint, checkpoints: list[tuple[CheckpointRef, FineTunedSource]],
              split_fused: bool = False, allow_partial: bool = False) -> Plan:
    """Raises ``InputError`` for an adapter that changes tensors the base does not have
    (unless ``allow_partial``) and, with ``split_fused``, for a fused layout not known."""
    names = sorted(base.tensors)
    model_type = infer_model_type(base.config or _first_config(checkpoints), names)
    config = base.config or _first_config(checkpoints)
    where = module_namer(names)
    rename = renamer(config)
    scales = scale_names(base.tensors)
    skipped, tensors, unscaled = [], {}, set()
    for name in names:
        info = base.tensors[name]
        reason = "fp8 scale (applied to its weight)" if name in scales else skip_reason(info)
        if reason:
            skipped.append({"tensor": name, "reason": reason})
            continue
        scale = _usable(find_scale(name, base.tensors, config), name, unscaled)
        tensors[name] = _tensor_plan(info, where[name], model_type, config, split_fused, scale)
    unmatched: list[dict] = []
    for ref, source in checkpoints:
        _add_targets(tensors, ref, source, skipped, unmatched, unscaled, rename)
        if source.kind != "full" and not allow_partial:
            _refuse_partial(ref, source, unmatched)
        skipped.extend({**s, "run": ref.run, "checkpoint": ref.name} for s in source.skipped)
    compared = [p for t in tensors.values() if t.targets for p in (_per_expert(t) if t.view == "experts" else [t])]
    skipped_per_checkpoint = {s["tensor"] for s in skipped if "run" in s}
    for t in tensors.values():
        if not t.targets and t.info.name not in skipped_per_checkpoint:
            skipped.append({"tensor": t.info.name, "reason": "no fine-tuned counterpart"})
    # Stream in file order so reads are sequential on disk.
    compared.sort(key=lambda t: (t.info.path, t.info.offset))
    return Plan(compared, skipped, unmatched, _unscaled_names(compared, unscaled), orientation_notes(config, names))


def _tensor_plan(info: TensorInfo, place: Place, model_type: str | None, config: dict, split_fused: bool,
                 scale: Fp8Scale | None) -> TensorPlan:
    """How a base tensor is measured: orientation, view and fused groups (``views``, ``registry``)."""
    module_path = info.name.removesuffix(".weight")
    view = "experts" if is_experts_stack(info) else "vectors" if is_vector_stack(info) else ""
    transposed = stored_transposed(model_type, info.name, info.shape)
    if view == "experts":
        out = info.shape[2] if transposed else info.shape[1]
    else:
        out = info.shape[1] if transposed else math.prod(info.shape[:-1]) if view else info.shape[0]
    groups = fused_groups(model_type, module_path, config, out, view == "experts") if split_fused else None
    return TensorPlan(as_vectors(info) if view == "vectors" else info, place.layer, place.module, transposed, groups,
                      scale=scale, stack=place.stack, expert=place.expert, view=view)


def _per_expert(plan: TensorPlan) -> list[TensorPlan]:
    """One plan per expert of a stored experts stack, each with its slice of every target."""
    stored = [t.source.infos()[t.name] for t in plan.targets]
    plans = []
    for e in range(plan.info.shape[0]):
        views = [expert_target(t.source, info, e) for t, info in zip(plan.targets, stored)]
        targets = [Target(t.ref, v, v.info.name, v.info.shape[0]) for t, v in zip(plan.targets, views)]
        plans.append(TensorPlan(expert_slice(plan.info, e), plan.layer, plan.module, plan.transposed, plan.groups,
                                targets, stack=plan.stack, expert=e))
    return plans


def _refuse_partial(ref: CheckpointRef, source: FineTunedSource, unmatched: list[dict]) -> None:
    """An adapter is a set of changes to the base: one that is not all found there is the
    wrong base (or renamed modules not resolved), not a smaller comparison."""
    missing = [u["tensor"] for u in unmatched
               if u["side"] == "finetuned" and (u["run"], u["checkpoint"]) == (ref.run, ref.name)]
    if missing:
        total = len(source.infos())
        shown = ", ".join(repr(n) for n in missing[:2]) + (f", ... ({len(missing) - 2} more)" * (len(missing) > 2))
        raise InputError(f"{ref.run}/{ref.name}: this adapter changes {total} tensors, {total - len(missing)} found in "
                         f"the base (not found: {shown}); is it for this base model? allow_partial (--allow-partial) "
                         "compares the ones found")


def _usable(scale: Fp8Scale | str | None, key: object, unscaled: set) -> Fp8Scale | None:
    """A scale to apply; one whose layout is not understood leaves the raw fp8 values: ``key``
    goes into ``unscaled`` for the warnings."""
    if isinstance(scale, str):
        unscaled.add(key)
    return scale if isinstance(scale, Fp8Scale) else None


def _unscaled_names(compared: list[TensorPlan], unscaled: set) -> list[str]:
    """The compared fp8 weights without their scale: base names, then ``run/checkpoint: name``."""
    return ([t.info.name for t in compared if t.info.name in unscaled]
            + [f"{x.ref.run}/{x.ref.name}: {x.name}" for t in compared for x in t.targets
               if (x.ref.run, x.ref.name, x.name) in unscaled])


def _first_config(checkpoints: list[tuple[CheckpointRef, FineTunedSource]]) -> dict:
    return next((s.config for _, s in checkpoints if s.config), {})


def _add_targets(tensors: dict[str, TensorPlan], ref: CheckpointRef, source: FineTunedSource,
                 skipped: list[dict], unmatched: list[dict], unscaled: set, rename) -> None:
    all_infos = source.infos()
    scales = scale_names(all_infos)
    infos = {n: i for n, i in all_infos.items() if n not in scales}
    mapping = match_names(list(tensors), list(infos), rename if _may_be_renamed(source, tensors, infos) else None)
    for base_name, plan in tensors.items():
        ft_name = mapping.get(base_name)
        if ft_name is None:
            if source.stored:   # an adapter changes only some tensors; a checkpoint lacking one is news
                unmatched.append({"run": ref.run, "checkpoint": ref.name, "tensor": base_name, "side": "base"})
            continue
        reason = _skip_reason(plan, source, infos[ft_name])
        if reason is not None:
            skipped.append({"tensor": base_name, "run": ref.run, "checkpoint": ref.name, "reason": reason})
            continue
        scale = _usable(find_scale(ft_name, all_infos, source.config), (ref.run, ref.name, ft_name), unscaled)
        plan.targets.append(_target(plan, ref, source, infos[ft_name], scale))
    matched = set(mapping.values())
    unmatched.extend({"run": ref.run, "checkpoint": ref.name, "tensor": n, "side": "finetuned"}
                     for n in sorted(infos) if n not in matched and skip_reason(infos[n]) is None)


def _may_be_renamed(source: FineTunedSource, tensors: dict[str, TensorPlan], infos: dict[str, TensorInfo]) -> bool:
    """Whether names left unmatched should be tried through the model's renames (``renamer``
    imports transformers, seconds): always for adapters, which PEFT names after the in-memory
    modules; for full checkpoints when a quarter or more of their tensors match nothing."""
    if not source.stored:
        return True
    unmatched = sum(n not in tensors for n in infos)
    return unmatched > 0 and 4 * unmatched >= len(infos)


def _skip_reason(plan: TensorPlan, source: FineTunedSource, ft: TensorInfo) -> str | None:
    """Why fine-tuned tensor ``ft`` cannot be compared with ``plan``'s base tensor, or None."""
    base = plan.info
    if not ft.is_float:
        return f"fine-tuned tensor has non-float dtype {ft.dtype}"
    if plan.view and (not can_view(source, plan.view) or len(ft.shape) < 2
                      or (plan.view == "experts" and ft.shape != base.shape)):
        return f"shape mismatch: base {list(base.shape)} ({plan.view} view) vs fine-tuned {list(ft.shape)}"
    shape = as_vectors(ft).shape if plan.view == "vectors" else ft.shape
    if shape == base.shape or _resized_rows(plan, shape):
        return None
    return f"shape mismatch: base {list(base.shape)} vs fine-tuned {list(ft.shape)}"


def _resized_rows(plan: TensorPlan, shape: tuple) -> bool:
    """A resized vocabulary changes only the first axis: the rows both share are compared."""
    base = plan.info.shape
    return not plan.transposed and len(shape) == len(base) and shape[1:] == base[1:] and plan.groups is None


def _target(plan: TensorPlan, ref: CheckpointRef, source: FineTunedSource, ft: TensorInfo,
            scale: Fp8Scale | None) -> Target:
    """The target for a tensor ``_skip_reason`` accepted."""
    base = plan.info
    if plan.view == "vectors":
        source, ft = StoredView(source, as_vectors(ft)), as_vectors(ft)
    if ft.shape == base.shape:
        return Target(ref, source, ft.name, base.shape[0], scale=scale)
    shared = min(ft.shape[0], base.shape[0])
    return Target(ref, source, ft.name, shared, (f"resized {base.shape[0]}->{ft.shape[0]} rows",), scale)
