"""A PEFT LoRA/DoRA adapter as a fine-tuned source: the effective weights, never merged on disk.

The effective weight is PEFT's merge, computed in fp32/fp64 without rounding to the base
dtype: ``W0 + s·B·A`` (s = alpha/r, or alpha/sqrt(r) with rsLoRA, r and alpha per module from
``rank_pattern``/``alpha_pattern``), for DoRA ``m · (W0 + s·B·A) / ‖W0 + s·B·A‖`` per output
channel. Orientation comes from the layer type, decided as for every reader
(``architecture.orientation.stored_transposed``): GPT-2 Conv1D stores (in, out), and PEFT
treats embeddings the same way, so their factors give the transpose and DoRA's norm runs over
stored columns. Factors that fit only the other orientation (a layer type the tables do not
know) are read that way.

Only the factors are read from the adapter file; base rows come from the analyzer's stream.
``channel_sums`` gives the kernel sums straight from the factors (see ``metrics.lowrank``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..architecture import match_names
from ..architecture.orientation import stored_transposed
from ..architecture.registry import infer_model_type
from ..architecture.renames import renamer
from ..errors import InputError
from ..metrics.kernels import ChannelSums
from .checkpoint import ADAPTER_CONFIG, ADAPTER_WEIGHTS, Checkpoint
from .method import TRAINER_METADATA, adapter_method
from .peft_config import PeftConfig, read_adapter_config
from ..metrics.lowrank import (FactorSums, LowRankDelta, channel_sums, dense_rows, dora_scale, expert_factors,
                               factor_sums)
from .peft_keys import AdapterModule, group_keys
from .peft_params import ExpertPart, ExpertView, ParamTarget, expert_name, param_targets
from .safetensors_file import RowReader, TensorInfo, read_header

PREPASS_BLOCK_BYTES = 16 * 1024 * 1024
# Factors, trainable-token rows and magnitudes are read whole (64 MB in fp32): r = 512 on a
# 32k-wide layer fits; larger are refused before anything is read.
MAX_FACTOR_ELEMENTS = 1 << 24
FACTOR_CACHE_MODULES = 2


@dataclass
class _Entry:
    """How to produce one effective base tensor: a low-rank module, trainable tokens, or a full tensor."""

    kind: str                    # "lowrank" | "tokens" | "full" | "experts" (a stored 3-D stack of lowrank slices)
    info: TensorInfo             # what ``infos()`` reports (base name, effective shape)
    module: AdapterModule | None = None
    transposed: bool = False     # factors apply to the stored (in, out) layout
    scale: float = 1.0
    w0: TensorInfo | None = None  # W0 for DoRA's column norms (the adapter's base_layer copy if saved)
    indices: list[int] | None = None
    part: ExpertPart | None = None   # LoRA on a raw parameter (``peft_params``): these rows of ΔW_e


def _check_factors(where: str, module: str, A: TensorInfo, B: TensorInfo) -> None:
    """Factors are read whole: float matrices (or conv kernels) of bounded size."""
    for f in (A, B):
        if len(f.shape) < 2 or not f.is_float:
            raise InputError(f"{where}: {module}: factor {f.name} is {f.dtype} {list(f.shape)}; LoRA factors are "
                             "floating-point matrices")
        check_whole_size(where, module, f)


def check_whole_size(where: str, module: str, f: TensorInfo) -> None:
    """Refuse an adapter tensor of more than ``MAX_FACTOR_ELEMENTS`` values before reading it whole."""
    n = math.prod(f.shape)
    if n > MAX_FACTOR_ELEMENTS:
        raise InputError(f"{where}: {module}: {f.name} {list(f.shape)} has {n} values; dora-diag reads adapter "
                         f"tensors of at most {MAX_FACTOR_ELEMENTS} values whole")


def locate_adapter(path: str) -> tuple[Path, Path]:
    p = Path(path)
    directory = p.parent if p.is_file() else p
    weights = directory / ADAPTER_WEIGHTS
    if not weights.is_file():
        if (directory / "adapter_model.bin").is_file():
            raise InputError(f"{directory}: adapter_model.bin is a pickle; dora-diag never unpickles untrusted "
                             "files. Re-save the adapter with save_pretrained(dir, safe_serialization=True)")
        raise InputError(f"{directory}: no {ADAPTER_WEIGHTS} next to {ADAPTER_CONFIG}")
    config = directory / ADAPTER_CONFIG
    if not config.is_file():
        raise InputError(f"{directory}: {ADAPTER_WEIGHTS} without {ADAPTER_CONFIG}; cannot tell r and alpha")
    return config, weights


def open_adapter(path: str, base: Checkpoint) -> "AdapterSource":
    """Open the PEFT adapter at ``path`` (directory or its adapter_model.safetensors) against ``base``."""
    config_path, weights = locate_adapter(path)
    config = read_adapter_config(config_path)
    tensors, metadata = read_header(str(weights))
    modules, full = group_keys(tensors, str(weights))
    method = adapter_method(config.use_dora, config.use_rslora, metadata.get(TRAINER_METADATA))
    return AdapterSource(str(weights), config, base, modules, full, method)


class AdapterSource:
    """``FineTunedSource`` for an adapter: kind "dora" when ``use_dora``, else "lora"; ``method``
    as ``io.method.adapter_method`` tells it."""

    skipped: tuple[dict, ...] = ()   # PEFT adapters are refused whole rather than in part
    stored = False                   # rows are computed from the base rows and the factors
    parallel_safe = False            # one tensor's factors are cached at a time
    magnitude_axes: tuple[str, ...] = ()   # PEFT's DoRA norm is always per output channel

    def __init__(self, where: str, config: PeftConfig, base: Checkpoint,
                 modules: dict[str, AdapterModule], full: dict[str, TensorInfo], method: str = "lora"):
        self.where, self.adapter_config, self.method = where, config, method
        self.kind = "dora" if config.use_dora else "lora"
        self.config: dict = {}
        self.reader = RowReader()
        self._base = base
        self._model_type = infer_model_type(base.config, list(base.tensors))
        self._entries: dict[str, _Entry] = {}
        self._slices: dict[str, _Entry] = {}   # ``name[e]`` of stored 3-D experts (``expert_view``)
        self._cache: tuple[str, torch.device, LowRankDelta, tuple | None] | None = None
        self._tokens: dict[str, torch.Tensor] = {}   # trainable-token rows, (n, dim) each
        self._factor_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}   # module path -> (A, B), oldest first
        base_names = list(base.tensors)
        # PEFT names modules as they are in memory; transformers 5 saves the base under older names.
        rename = renamer(base.config)
        modules, params, unplaced = param_targets(self.where, config, modules, base.tensors, self._model_type, rename)
        for p in params:
            self._add_param(p)
        for m in unplaced:
            self._add_module(m, None, m.path)
        wanted = {f"{p}.weight": m for p, m in modules.items()}
        to_base = {v: k for k, v in match_names(base_names, list(wanted), rename).items()}
        for name, m in wanted.items():
            self._add_module(m, to_base.get(name), name)
        full_to_base = {v: k for k, v in match_names(base_names, list(full), rename).items()}
        for name, info in full.items():
            key = full_to_base.get(name, name)
            self._entries[key] = _Entry("full", replace(info, name=key))

    # ---- building entries --------------------------------------------------------------------
    def _add_module(self, m: AdapterModule, base_name: str | None, own_name: str) -> None:
        factors = m.factors
        if factors is None:
            self._add_tokens(m, base_name, own_name)
            return
        A, B = factors
        _check_factors(self.where, m.path, A, B)
        if base_name is None:
            # No base weight: reported by the planner as unmatched, never streamed.
            shape = (B.shape[0], *A.shape[1:]) if not m.is_embedding else (A.shape[1], B.shape[0])
            self._entries[own_name] = _Entry("lowrank", TensorInfo(own_name, A.dtype, shape, self.where, 0, 0), m)
            return
        base = self._base.tensors[base_name]
        rank, scale = self.adapter_config.rank_and_scale(m.path)
        if A.shape[0] != rank or (len(B.shape) > 1 and B.shape[1] != rank):
            raise InputError(f"{self.where}: {m.path}: adapter_config gives r={rank} but the factors have shapes "
                             f"{list(A.shape)} and {list(B.shape)}")
        transposed, shape = self._orientation(m, A, B, base)
        if "magnitude" in m.parts and not self.adapter_config.use_dora:
            raise InputError(f"{self.where}: {m.path} has a DoRA magnitude but use_dora is false in the config")
        if self.adapter_config.use_dora and "magnitude" not in m.parts:
            raise InputError(f"{self.where}: use_dora is set but {m.path} has no lora_magnitude_vector")
        w0 = m.parts.get("base_layer", base)
        info = TensorInfo(base_name, base.dtype, shape, self.where, 0, 0)
        self._entries[base_name] = _Entry("lowrank", info, m, transposed, scale, w0)

    def _add_param(self, p: ParamTarget) -> None:
        """A base tensor changed by LoRA on a raw parameter: rows ``p.part`` of ΔW_e (out, in) for a
        per-expert or 2-D tensor, or ``name[e]`` of a stored 3-D stack (ΔW_eᵀ when ``p.transposed``)."""
        A, B = p.module.factors
        _check_factors(self.where, p.module.path, A, B)
        base = self._base.tensors[p.base_name]
        scale = self.adapter_config.rank_and_scale(p.parameter)[1]
        if p.stacked:
            name = expert_name(p.base_name, p.part.expert)
            info = TensorInfo(name, base.dtype, base.shape[1:], self.where, 0, 0)
            self._slices[name] = _Entry("lowrank", info, p.module, p.transposed, scale, part=p.part)
            self._entries.setdefault(p.base_name, _Entry("experts", replace(info, name=p.base_name, shape=base.shape)))
            return
        if base.shape[0] != p.part.stop - p.part.start or base.shape[1:] != (A.shape[1],):
            raise InputError(f"{self.where}: {p.module.path}: factors {list(A.shape)} x {list(B.shape)} do not fit "
                             f"base tensor {p.base_name} {list(base.shape)}")
        info = TensorInfo(p.base_name, base.dtype, base.shape, self.where, 0, 0)
        self._entries[p.base_name] = _Entry("lowrank", info, p.module, scale=scale, w0=base, part=p.part)

    def expert_view(self, name: str, expert: int) -> ExpertView:
        """Expert ``expert`` of the stored 3-D experts tensor ``name``, as its own source."""
        return ExpertView(self, self._slices[expert_name(name, expert)].info)

    def _orientation(self, m: AdapterModule, A: TensorInfo, B: TensorInfo, base: TensorInfo) -> tuple[bool, tuple]:
        """(stored transposed?, effective shape). Embeddings are always (vocab, dim) = transposed;
        otherwise the layer type decides, and the factor shapes must agree with it."""
        rows_shape = (B.shape[0], *A.shape[1:])
        cols_shape = (A.shape[1], B.shape[0])
        if m.is_embedding:
            candidates = [(True, cols_shape)]
        elif len(A.shape) > 2 or len(base.shape) != 2:
            candidates = [(False, rows_shape)]
        else:
            conv1d = stored_transposed(self._model_type, base.name, base.shape)
            candidates = [(conv1d, cols_shape if conv1d else rows_shape), (not conv1d, rows_shape if conv1d else cols_shape)]
        resizable = "base_layer" in m.parts
        conv_b_ok = all(s == 1 for s in B.shape[2:])
        for transposed, shape in candidates:
            fits = tuple(shape) == base.shape or (resizable and tuple(shape[1:]) == base.shape[1:])
            if conv_b_ok and fits:
                return transposed, tuple(shape)
        raise InputError(f"{self.where}: {m.path}: factors {list(A.shape)} x {list(B.shape)} do not fit base "
                         f"tensor {base.name} {list(base.shape)}; was the adapter trained on this base model?")

    def _add_tokens(self, m: AdapterModule, base_name: str | None, own_name: str) -> None:
        delta = m.parts["tokens"]
        check_whole_size(self.where, m.path, delta)
        indices = self.adapter_config.indices_for(m.path)
        if not isinstance(indices, list) or len(indices) != delta.shape[0]:
            raise InputError(f"{self.where}: {m.path}: trainable_token_indices does not list the "
                             f"{delta.shape[0]} tokens of trainable_tokens_delta")
        if base_name is None:
            self._entries[own_name] = _Entry("tokens", TensorInfo(own_name, delta.dtype, delta.shape, self.where, 0, 0), m)
            return
        base = self._base.tensors[base_name]
        if base.shape[1:] != delta.shape[1:] or max(indices) >= base.shape[0]:
            raise InputError(f"{self.where}: {m.path}: trainable tokens {list(delta.shape)} (max index "
                             f"{max(indices)}) do not fit base tensor {base_name} {list(base.shape)}")
        info = TensorInfo(base_name, base.dtype, base.shape, self.where, 0, 0)
        self._entries[base_name] = _Entry("tokens", info, m, indices=[int(i) for i in indices])

    # ---- FineTunedSource ---------------------------------------------------------------------
    def infos(self) -> dict[str, TensorInfo]:
        return {name: e.info for name, e in self._entries.items()}

    def rows(self, name: str, base_rows: torch.Tensor, start: int, stop: int,
             out: torch.Tensor | None = None) -> torch.Tensor:
        """Effective rows ``start:stop`` (stored layout, shape of ``base_rows`` flattened to 2-D)."""
        e = self._entry(name)
        if e.kind == "full":
            return self.reader.read_rows(e.info, start, stop, out)
        w = base_rows.reshape(stop - start, -1)
        if e.kind == "tokens":
            return self._token_rows(e, w, start, stop)
        if e.kind == "experts":   # whole experts (``verify``): each expert's matrix from its slice
            shape = e.info.shape[1:]
            return torch.stack([self.rows(expert_name(name, i), w[i - start].reshape(shape), 0, shape[0]).reshape(-1)
                                for i in range(start, stop)])
        delta, col_scale = self._delta(name, w.device)
        return dense_rows(delta, w, start, stop, None if col_scale is None else col_scale[0])

    def _entry(self, name: str) -> _Entry:
        found = self._find(name)
        if found is None:
            raise KeyError(name)
        return found

    def _find(self, name: str) -> _Entry | None:
        """A tensor of ``infos()`` or an expert slice of one (``expert_view``)."""
        return self._entries.get(name) or self._slices.get(name)

    def drop_behind(self) -> None:
        """Factors are read whole, once: nothing to drop."""

    def channel_sums(self, name: str, base_rows: torch.Tensor, start: int, stop: int, axis: str) -> ChannelSums | None:
        """Kernel sums for rows ``start:stop`` from the factors, without the dense delta.

        None where the dense path is needed: full tensors, trainable tokens, and DoRA measured
        along the other axis than its magnitude (``--axis in``).
        """
        e = self._entry(name)
        if e.kind != "lowrank":
            return None
        w = base_rows.reshape(stop - start, -1)
        delta, col_scale = self._delta(name, w.device)
        if delta.magnitude is not None and delta.magnitude_axis != axis:
            return None
        sums = factor_sums(w, delta.L[start:stop], delta.R, axis)
        if delta.magnitude is None:
            return channel_sums(sums, None)
        scale = dora_scale(delta.magnitude[start:stop], sums) if axis == "out" else col_scale
        return channel_sums(sums, scale)

    def transposed(self, name: str) -> bool | None:
        """Whether the factors give tensor ``name`` as stored (in, out); None where it is not computed from factors."""
        e = self._find(name)
        return None if e is None or e.kind != "lowrank" else e.transposed

    def rank_and_scale(self, name: str) -> tuple[int, float] | None:
        e = self._find(name)
        if e is None or e.kind != "lowrank" or e.module.factors is None:
            return None
        experts = 1 if e.part is None else e.part.experts   # one (r, in) block of A per expert
        return e.module.factors[0].shape[0] // experts, e.scale

    def bytes_read(self) -> int:
        return self.reader.bytes_read

    def close(self) -> None:
        self.reader.close()
        self._cache = None
        self._factor_cache.clear()
        self._tokens.clear()

    # ---- factors -----------------------------------------------------------------------------
    def _token_rows(self, e: _Entry, w: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        out = w.float().clone()
        picked = [(j, i) for j, i in enumerate(e.indices) if start <= i < stop]
        if picked:
            info = e.module.parts["tokens"]
            if info.name not in self._tokens:
                self._tokens[info.name] = self.reader.read_all(info).float()
            values = self._tokens[info.name].to(w.device)
            rows = torch.tensor([i - start for _, i in picked], device=w.device)
            out[rows] = values[[j for j, _ in picked]].reshape(len(picked), -1)
        return out

    def _delta(self, name: str, device: torch.device) -> tuple[LowRankDelta, tuple | None]:
        """The module's factors on ``device`` (one module cached) and DoRA's per-column (k, k-1)."""
        if self._cache is not None and self._cache[0] == name and self._cache[1] == device:
            return self._cache[2], self._cache[3]
        e = self._entry(name)
        delta = self._load(e).to(device)
        col_scale = None
        if delta.magnitude is not None and delta.magnitude_axis == "in":
            col_scale = dora_scale(delta.magnitude, self._column_sums(e, delta))
        self._cache = (name, device, delta, col_scale)
        return delta, col_scale

    def _factors(self, module: AdapterModule) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) in fp32, read once per module while it is in use: all experts of a raw-parameter
        module share one pair, and a layer's two (gate_up, down) alternate in file order."""
        if module.path not in self._factor_cache:
            A_info, B_info = module.factors
            self._factor_cache[module.path] = (self.reader.read_all(A_info).float(), self.reader.read_all(B_info).float())
            while len(self._factor_cache) > FACTOR_CACHE_MODULES:
                self._factor_cache.pop(next(iter(self._factor_cache)))
        return self._factor_cache[module.path]

    def _load(self, e: _Entry) -> LowRankDelta:
        A, B = self._factors(e.module)
        if e.part is not None:
            B, A = expert_factors(A, B, e.part.experts, e.part.expert)
            B = B[e.part.start:e.part.stop]
        r = A.shape[0]
        if e.transposed:
            L, R = (A.T * e.scale).contiguous(), B.T.contiguous()
        else:
            L, R = B.reshape(B.shape[0], r) * e.scale, A.reshape(r, -1)
        mag_info = e.module.parts.get("magnitude")
        if mag_info is not None and math.prod(mag_info.shape) != (R.shape[1] if e.transposed else L.shape[0]):
            raise InputError(f"{self.where}: {e.module.path}: lora_magnitude_vector has {math.prod(mag_info.shape)} "
                             "values, not one per output channel")
        mag = None if mag_info is None else self.reader.read_all(mag_info).double().reshape(-1)
        return LowRankDelta(L, R, mag, "in" if e.transposed else "out")

    def _column_sums(self, e: _Entry, delta: LowRankDelta) -> FactorSums:
        """One streaming pass over W0 for DoRA norms that run over stored columns."""
        w0 = e.w0
        device = delta.L.device
        total = FactorSums(*(torch.zeros(delta.R.shape[1], dtype=torch.float64, device=device) for _ in range(3)))
        step = max(1, PREPASS_BLOCK_BYTES // max(1, w0.row_bytes))
        for start in range(0, w0.shape[0], step):
            stop = min(w0.shape[0], start + step)
            w = self.reader.read_rows(w0, start, stop).reshape(stop - start, -1).to(device)
            total.add_(factor_sums(w, delta.L[start:stop], delta.R, "in"))
        return total
