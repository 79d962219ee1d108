"""``TrainConfig``: every setting of a training run and its default, declared once.

Free of heavy imports (no torch): the ``train`` command builds its options' defaults from these
fields, and ``dora-diag --help`` must answer at once.

Defaults that depend on other settings are ``None`` here and filled in by ``resolved()``:
the learning rate by method family (``DEFAULT_LR``: adapter or full fine-tuning, as the methods
table says), the warmup as ``WARMUP_FRACTION`` of the steps, and torch's CPU thread count by
model size (``threads_for`` in the trainer).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import InputError
from ..methods import method
from ..options import QUANTIZE

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
# The usual learning rates of each family: full fine-tuning moves every weight, a low-rank
# adapter starts from B = 0 and needs a larger step to move at all in a short run.
DEFAULT_LR = {"ft": 1e-3, "adapter": 4e-3}
WARMUP_FRACTION = 0.1
# Below this many parameters the trainer runs torch on one CPU thread (see loop.threads_for).
SMALL_MODEL_PARAMS = 20_000_000


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; written (resolved) to ``train_config.json``."""

    out: str
    method: str = "dora"
    model: str = "builtin"
    data: str = "builtin"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    use_rslora: bool = False
    targets: tuple[str, ...] = ALL_PROJECTIONS
    magnitude_only: tuple[str, ...] = MLP_MODULES  # used by reduced-granularity methods only (dora-magnitude-only)
    steps: int = 300
    save_every: int = 50
    log_every: int = 10
    batch_size: int = 32
    lr: float | None = None                # None: DEFAULT_LR of the method's family
    magnitude_lr_mult: float = 1.0
    weight_decay: float = 0.0
    warmup_steps: int | None = None        # None: WARMUP_FRACTION of the steps
    max_grad_norm: float = 1.0
    seed: int = 0
    quantize: str | None = None
    max_length: int = 128
    eval_fraction: float = 0.1
    device: str = "auto"
    threads: int | None = None             # torch CPU threads; None: by model size

    def resolved(self) -> "TrainConfig":
        """This config with the learning rate and warmup defaults filled in."""
        lr = self.lr if self.lr is not None else default_lr(self.method)
        warmup = self.warmup_steps if self.warmup_steps is not None else int(self.steps * WARMUP_FRACTION)
        return replace(self, lr=lr, warmup_steps=warmup)

    def validate(self) -> None:
        """Check a resolved config; InputError naming the first bad setting."""
        row = method(self.method)
        for name in ("steps", "save_every", "log_every", "batch_size", "max_length"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.magnitude_lr_mult <= 0:
            raise InputError("learning rate and magnitude LR multiplier must be positive")
        if self.warmup_steps < 0 or self.warmup_steps >= self.steps:
            raise InputError(f"warmup steps must be in [0, steps), got {self.warmup_steps}")
        if self.threads is not None and self.threads <= 0:
            raise InputError(f"threads must be positive, got {self.threads}")
        if self.quantize not in (None, *QUANTIZE):
            raise InputError(f"quantize must be one of {', '.join(QUANTIZE)}, not {self.quantize!r}")
        if self.quantize and not row.adapter:
            raise InputError(f"quantize='nf4' freezes the base in 4 bits; it needs an adapter method, not {self.method}")
        if self.model != "builtin" and not Path(self.model).is_dir():
            raise InputError(f"model {self.model}: no such directory (give 'builtin' or a model directory)")
        if self.data != "builtin" and not Path(self.data).is_file():
            raise InputError(f"data {self.data}: no such file (give 'builtin' or a JSONL file)")
        if not 0 < self.eval_fraction < 1:
            raise InputError(f"eval fraction must be in (0, 1), got {self.eval_fraction}")

    def adapter_config(self):
        """The inject.AdapterConfig for adapter methods (None for full fine-tuning); a
        reduced-granularity method (dora-magnitude-only) gets direction + magnitude on ``targets``
        and magnitude only on ``magnitude_only``."""
        row = method(self.method)
        if not row.adapter:
            return None
        from ..adapters.inject import AdapterConfig  # torch: only when a run is built
        mag = tuple(self.magnitude_only) if row.reduced_granularity else ()
        return AdapterConfig(method=self.method, rank=self.rank, alpha=self.alpha, dropout=self.dropout,
                             use_rslora=self.use_rslora, targets=tuple(self.targets) + mag, magnitude_only=mag,
                             magnitude_lr_mult=self.magnitude_lr_mult, seed=self.seed)


def default_lr(name: str) -> float:
    """DEFAULT_LR of the method's family."""
    return DEFAULT_LR["adapter" if method(name).adapter else "ft"]
