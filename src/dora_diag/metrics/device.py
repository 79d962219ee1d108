"""Where the kernels run: ``auto`` picks CUDA when torch sees a GPU."""

from __future__ import annotations

import torch

from ..errors import InputError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: torch sees no CUDA device on this machine")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"--device must be one of {', '.join(DEVICES)}, not {name!r}")
