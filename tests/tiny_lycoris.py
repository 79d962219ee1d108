"""LyCORIS test cases (importable as ``tiny_lycoris``): a tiny torch model, a LyCORIS/kohya file
written by lycoris-lora itself, and the same model merged by LyCORIS's own ``merge_to``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn


class Tiny(nn.Module):
    """Two layers of a Linear projection and a 3x3 Conv2d (LoCon) plus a 1x1 Conv2d."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleDict({"q_proj": nn.Linear(12, 10), "v_proj": nn.Linear(12, 12),
                                                   "conv": nn.Conv2d(4, 6, 3), "pointwise": nn.Conv2d(6, 5, 1)})
                                    for _ in range(2))


@dataclass
class LycorisCase:
    base: Path       # the tiny model's weights (one .safetensors)
    adapter: Path    # the LyCORIS file
    merged: Path     # LyCORIS's merge_to() of the adapter into the model


def save_state(model: nn.Module, path: Path) -> Path:
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def make_case(directory: Path, seed: int = 0, model: nn.Module | None = None, **lycoris_kwargs) -> LycorisCase:
    """Base, a trained-looking LyCORIS file (random factors, perturbed dora_scale) and its merge."""
    from lycoris import create_lycoris

    torch.manual_seed(seed)
    model = model or Tiny()
    base = save_state(model, directory / "base.safetensors")
    kwargs = {"linear_dim": 4, "linear_alpha": 2, "conv_dim": 3, "conv_alpha": 6, "algo": "lora", **lycoris_kwargs}
    net = create_lycoris(model, 1.0, **kwargs)
    net.apply_to()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "dora_scale" in name:
                p.mul_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * 0.3)
    adapter = directory / "lycoris.safetensors"
    net.save_weights(str(adapter), torch.float32, {})
    net.merge_to()
    net.restore()
    merged = save_state(model, directory / "merged.safetensors")
    return LycorisCase(base, adapter, merged)
