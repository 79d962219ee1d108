"""Per-module rank and scale for adapters whose files, not an ``adapter_config.json``, decide them.

``AdapterSource`` asks its config two things: ``rank_and_scale(module path)`` and ``use_dora``.
LyCORIS/kohya files store alpha per module, diffusers files a config per pipeline component;
both are resolved once, when the file is opened, into this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModuleScales:
    """The ``PeftConfig`` face of a table ``{module path: (rank, scale)}``."""

    use_dora: bool
    per_module: dict[str, tuple[int, float]]
    target_parameters: tuple[str, ...] = ()   # these formats adapt modules, never raw parameters

    def rank_and_scale(self, module_path: str) -> tuple[int, float]:
        return self.per_module[module_path]

    def indices_for(self, module_path: str) -> None:
        """No trainable tokens in these formats."""
        return None
