"""The training methods: one row each, the one table that the ``train`` command's ``--method``
choices and help, the run config's and adapter config's validation, adapter injection, the PEFT
exporter/importer and the reading of a run's method (``io.method``) take their names and facts from.

A row names its layer class in ``dora_diag.adapters`` (``"module.Class"``); that class carries the
method's init, forward, merge and PEFT export/import (PEFT's LoRA-variant pattern), so a new
method is one class (in ``adapters/layers.py`` or a module of its own) and one row here.
Free of heavy imports (no torch): ``dora-diag --help`` builds its ``--method`` option from this
table and must answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Method:
    """One training method and the facts the trainer, the CLI and the adapter library ask of it."""

    name: str
    help: str                        # one clause for ``--method``'s help
    layer: str | None = None         # its class, "module.Class" in dora_diag.adapters; None: full fine-tuning
    magnitude: bool = False          # DoRA's magnitude vector m (out,) (PEFT's ``use_dora``)
    frozen_magnitude: bool = False   # m stays at its init ‖W0‖ (only with ``magnitude``)
    # The paper's reduced granularity: the run's magnitude-only patterns are this method's own,
    # and with none every target gets a magnitude only.
    reduced_granularity: bool = False
    peft_native: bool = False        # PEFT's own LoRA/DoRA: a PEFT adapter without our metadata reads as it

    @property
    def adapter(self) -> bool:
        """Trains an adapter over a frozen base (else every weight trains)."""
        return self.layer is not None

    @property
    def trains_magnitude(self) -> bool:
        return self.magnitude and not self.frozen_magnitude


METHODS = {m.name: m for m in (
    Method("ft", "full fine-tuning"),
    Method("lora", "LoRA", layer="layers.LoraLinear", peft_native=True),
    Method("dora", "DoRA (LoRA's direction, a trained magnitude per output row)", layer="layers.DoraLinear",
           magnitude=True, peft_native=True),
    Method("dora-frozen-magnitude", "DoRA with the magnitude frozen at the base's row norms",
           layer="layers.DoraLinear", magnitude=True, frozen_magnitude=True),
    Method("dora-magnitude-only", "direction+magnitude on --targets, magnitude only on --magnitude-only "
           "(the paper's reduced granularity)", layer="layers.DoraLinear", magnitude=True, reduced_granularity=True),
    Method("dvora", "DoRA with VeRA's direction update (shared frozen projections, trained scaling vectors)",
           layer="dvora.DVoraLinear", magnitude=True),
)}
TRAIN_METHODS = tuple(METHODS)
ADAPTER_METHODS = tuple(n for n, m in METHODS.items() if m.adapter)


def method(name: str, adapters_only: bool = False) -> Method:
    """The row of ``name``; InputError naming the choices when there is none (or, with
    ``adapters_only``, when it trains no adapter)."""
    choices = ADAPTER_METHODS if adapters_only else TRAIN_METHODS
    if not isinstance(name, str) or name not in choices:
        kind = "adapter method" if adapters_only else "method"
        raise InputError(f"unknown {kind} {name!r}; choose one of {', '.join(choices)}")
    return METHODS[name]


def peft_method(use_dora: bool) -> str:
    """The method a plain PEFT LoRA adapter (no dora_diag metadata) is: PEFT's DoRA or its LoRA."""
    return next(n for n, m in METHODS.items() if m.peft_native and m.magnitude == bool(use_dora))
