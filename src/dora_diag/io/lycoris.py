"""LyCORIS / kohya LoRA and DoRA files as a fine-tuned source (one ``.safetensors``).

Keys per module (names resolved by ``kohya_names``): ``<name>.lora_down.weight`` (r, in[, kh, kw]),
``<name>.lora_up.weight`` (out, r[, 1, 1]), ``<name>.alpha`` (0-dim; absent means alpha = r),
DoRA's ``<name>.dora_scale``. LyCORIS's merge (``LoConModule.get_merged_weight``) is
``W = W0 + (alpha/r)·up@down`` and, with DoRA, ``W·dora_scale/‖W‖`` where the norm runs along
the axis the file was trained with: ``dora_scale`` (out, 1[, 1, 1]) is one magnitude per output
channel (norm over the stored row, ``wd_on_output=True``), (1, in) one per input column (norm over
the stored column). The axis is read per module from that shape.

The effective weight is then the same ``W0 + L@R`` (optionally rescaled) as a PEFT adapter's, so
the PEFT source computes it; this module maps the keys and supplies each module's scale and
magnitude axis, and folds LoCon's Tucker core ``lora_mid`` into the right factor. Other LyCORIS
algorithms and input-axis DoRA on convolution kernels (one norm over (out, kh, kw) per input
channel, not a stored column) are listed as skipped with the reason, never approximated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import InputError, UnsupportedError
from .adapter_formats import FACTORS, OTHER_ALGORITHMS, PARTS
from .checkpoint import Checkpoint
from .kohya_names import FlatIndex
from .module_scales import ModuleScales
from .peft import AdapterSource, _Entry, check_whole_size
from ..metrics.lowrank import LowRankDelta
from .peft_keys import AdapterModule
from .safetensors_file import RowReader, TensorInfo, read_header

@dataclass
class _Module:
    name: str                                   # as in the file, e.g. "lora_unet_mid_block_proj"
    parts: dict[str, TensorInfo] = field(default_factory=dict)
    base_path: str | None = None                # the base module it adapts, once resolved


def open_lycoris(path: str, base: Checkpoint) -> "LycorisSource":
    """Open the LyCORIS/kohya file ``path`` against ``base``."""
    tensors, _ = read_header(path)
    modules: dict[str, _Module] = {}
    for key, info in tensors.items():
        name, part = key.split(".", 1)
        modules.setdefault(name, _Module(name)).parts[part] = info
    index = FlatIndex(list(base.tensors))
    skipped: list[dict] = []
    usable: list[_Module] = []
    with RowReader() as reader:
        for m in modules.values():
            m.base_path, ambiguous = index.resolve(m.name)
            reason = ambiguous or _unsupported(m, base)
            if reason:
                skipped.append({"tensor": m.base_path + ".weight" if m.base_path else m.name, "reason": reason})
            else:
                usable.append(m)
        scales = {m.base_path: _rank_and_scale(m, reader, path) for m in usable}
    if not usable:
        reasons = sorted({s["reason"] for s in skipped})
        raise UnsupportedError(f"{path}: none of its {len(skipped)} modules can be applied to this base "
                               f"({'; '.join(reasons[:3])})")
    return LycorisSource(path, base, usable, scales, skipped)


def _unsupported(m: _Module, base: Checkpoint) -> str | None:
    """Why module ``m`` cannot be applied, or None."""
    if m.base_path is None:
        return "no base tensor of this name (module path with '.' -> '_')"
    algorithm = next((a for suffix, a in OTHER_ALGORITHMS.items() if suffix in m.parts), None)
    if algorithm:
        return f"LyCORIS {algorithm} is not supported; merge it with LyCORIS and compare the merged model"
    unknown = sorted(set(m.parts) - PARTS)
    if unknown:
        return f"unrecognized LyCORIS tensors ({', '.join(unknown)})"
    if not set(FACTORS) <= set(m.parts):
        return f"incomplete LoRA factors ({', '.join(sorted(m.parts))})"
    scale = m.parts.get("dora_scale")
    w0 = base.tensors.get(f"{m.base_path}.weight")
    if "lora_mid.weight" in m.parts and not _tucker_fits(m, w0):
        return "a Tucker core (lora_mid) whose shapes do not fit the base kernel"
    if scale is not None and w0 is not None and _magnitude_axis(scale) == "in" and w0.row_elements != w0.shape[1]:
        return "input-axis DoRA on a convolution kernel (norm per input channel over (out, kh, kw)) is not supported"
    return None


def _tucker_fits(m: _Module, w0: TensorInfo | None) -> bool:
    """down (r, in, 1, 1), mid (r, r, kh, kw), up (out, r, 1, 1) against a kernel (out, in, kh, kw)."""
    down, mid, up = (m.parts[f"lora_{p}.weight"].shape for p in ("down", "mid", "up"))
    r = down[0]
    return (w0 is not None and len(w0.shape) == len(mid) >= 3 and tuple(mid[:2]) == (r, r)
            and tuple(mid[2:]) == tuple(w0.shape[2:]) and down[1] == w0.shape[1] and up[0] == w0.shape[0])


def _magnitude_axis(dora_scale: TensorInfo) -> str:
    """"out" for a (out, 1, ...) dora_scale, "in" for (1, in, ...) (LyCORIS ``wd_on_output=False``)."""
    return "in" if len(dora_scale.shape) >= 2 and dora_scale.shape[0] == 1 and dora_scale.shape[1] > 1 else "out"


def _rank_and_scale(m: _Module, reader: RowReader, where: str) -> tuple[int, float]:
    """(r, alpha/r); LyCORIS treats a missing or zero alpha as alpha = r."""
    rank = m.parts["lora_down.weight"].shape[0]
    info = m.parts.get("alpha")
    if info is None:
        return rank, 1.0
    if info.shape not in ((), (1,)) or not info.is_float:
        raise InputError(f"{where}: {m.name}.alpha is not a scalar float ({info.dtype} {list(info.shape)})")
    alpha = float(reader.read_all(info).reshape(()))
    if alpha != alpha or abs(alpha) == float("inf"):
        raise InputError(f"{where}: {m.name}.alpha is not finite")
    return rank, (alpha or rank) / rank


class LycorisSource(AdapterSource):
    """``FineTunedSource`` for a LyCORIS/kohya file: kind "dora" with ``dora_scale``, else "lora"."""

    def __init__(self, where: str, base: Checkpoint, modules: list[_Module],
                 scales: dict[str, tuple[int, float]], skipped: list[dict]):
        self._input_magnitudes: dict[str, TensorInfo] = {}
        self._tucker = {m.base_path: m.parts["lora_mid.weight"] for m in modules if "lora_mid.weight" in m.parts}
        peft_modules: dict[str, AdapterModule] = {}
        for m in modules:
            path = m.base_path
            parts = {"A": m.parts["lora_down.weight"], "B": m.parts["lora_up.weight"]}
            scale = m.parts.get("dora_scale")
            if scale is not None and _magnitude_axis(scale) == "out":
                parts["magnitude"] = scale
            elif scale is not None:
                self._input_magnitudes[path] = scale
            peft_modules[path] = AdapterModule(path, parts)
        output_axis = any("magnitude" in m.parts for m in peft_modules.values())
        dora = output_axis or bool(self._input_magnitudes)
        # The PEFT source checks magnitudes against use_dora; input-axis ones are added in _load.
        super().__init__(where, ModuleScales(output_axis, scales), base, peft_modules, {}, "dora" if dora else "lora")
        self.kind = "dora" if dora else "lora"
        self.skipped = skipped
        self.magnitude_axes = sorted(({"out"} if output_axis else set()) | ({"in"} if self._input_magnitudes else set()))

    def _orientation(self, m: AdapterModule, A: TensorInfo, B: TensorInfo, base: TensorInfo) -> tuple[bool, tuple]:
        """A Tucker module's factors are 1x1 kernels around its core; ``_tucker_fits`` checked them."""
        return (False, tuple(base.shape)) if m.path in self._tucker else super()._orientation(m, A, B, base)

    def _load(self, e: _Entry) -> LowRankDelta:
        """L = s·up (out, r); R = down (r, in), or for a Tucker core
        R[m, (j, h, w)] = Σ_n mid[m, n, h, w]·down[n, j] (LyCORIS ``tucker_weight_from_conv``)."""
        delta = super()._load(e)
        core = self._tucker.get(e.module.path)
        if core is not None:
            check_whole_size(self.where, e.module.path, core)
            mid = self.reader.read_all(core).float()
            R = torch.einsum("mn...,nj->mj...", mid, delta.R).reshape(mid.shape[0], -1)
            delta = LowRankDelta(delta.L, R, delta.magnitude, delta.magnitude_axis)
        info = self._input_magnitudes.get(e.module.path)
        if info is None:
            return delta
        if math.prod(info.shape) != delta.R.shape[1]:   # checked before reading: the shape may be absurd
            raise InputError(f"{self.where}: {e.module.path}: dora_scale has {math.prod(info.shape)} values, "
                             f"not one per input column ({delta.R.shape[1]})")
        magnitude = self.reader.read_all(info).double().reshape(-1)
        return LowRankDelta(delta.L, delta.R, magnitude, "in")
