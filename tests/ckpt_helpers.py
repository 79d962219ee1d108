"""Shared test helpers (importable as ``ckpt_helpers``): checkpoint writers and an
independent float64 reference."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

def write_checkpoint(directory: Path, tensors: dict[str, torch.Tensor], config: dict | None = None,
                     shards: int = 1) -> Path:
    """Write ``tensors`` as a HF-style model directory (optionally index-sharded)."""
    directory.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (directory / "config.json").write_text(json.dumps(config))
    names = sorted(tensors)
    if shards == 1:
        save_file({k: tensors[k].contiguous() for k in names}, str(directory / "model.safetensors"))
        return directory
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: tensors[k].contiguous() for k in part}, str(directory / fname))
        weight_map.update({k: fname for k in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


def reference_changes(w0: torch.Tensor, w1: torch.Tensor) -> dict[str, float]:
    """ΔM, ΔD, rel ΔM per output row, the obvious way, in float64 on float64 copies.

    ``w0``/``w1`` have shape (out, ...) and are flattened per output channel. Rows that are all
    zero in either tensor are excluded from ΔD and counted in ``zero_rows``.
    """
    a = w0.double().reshape(w0.shape[0], -1)
    c = w1.double().reshape(w1.shape[0], -1)
    m0, m1 = a.norm(dim=1), c.norm(dim=1)
    live = (m0 > 0) & (m1 > 0)
    cos = (a[live] * c[live]).sum(1) / (m0[live] * m1[live])
    dm = (m1 - m0).abs()
    return {
        "delta_m": float(dm.mean()),
        "delta_d": float((1 - cos).mean()) if bool(live.any()) else float("nan"),
        "rel_delta_m": float((dm[m0 > 0] / m0[m0 > 0]).mean()),
        "zero_rows": int((~live).sum()),
    }
