"""Group the tensors of ``adapter_model.safetensors`` by the module they adapt.

PEFT (>= 0.7) saves, for a module at path P (``base_model.model.`` + P in the file):
``P.lora_A.weight`` (r, in[, kh, kw]), ``P.lora_B.weight`` (out, r[, 1, 1]), DoRA's
``P.lora_magnitude_vector`` (out,), embeddings' ``P.lora_embedding_A`` (r, vocab) and
``P.lora_embedding_B`` (dim, r), a copy of a targeted embedding as ``P.base_layer.weight``,
trainable tokens as ``P.token_adapter.trainable_tokens_delta`` (n, dim), and
``modules_to_save`` as plain tensors (``classifier.weight``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import UnsupportedError
from .safetensors_file import TensorInfo

PREFIX = "base_model.model."
ROLES = (
    (".lora_A.weight", "A"),
    (".lora_B.weight", "B"),
    (".lora_embedding_A", "emb_A"),
    (".lora_embedding_B", "emb_B"),
    (".lora_magnitude_vector.weight", "magnitude"),   # written by some PEFT versions
    (".lora_magnitude_vector", "magnitude"),
    (".base_layer.weight", "base_layer"),
    (".token_adapter.trainable_tokens_delta", "tokens"),
)
# The suffixes PEFT 0.21 writes for a linear/conv module (what adapters.peft_format saves), by role.
WRITTEN = {role: suffix.removeprefix(".") for suffix, role in ROLES
           if suffix in (".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector")}
# A modules_to_save copy as it sits in a live PeftModel ("classifier.modules_to_save.default.weight").
MODULES_TO_SAVE = re.compile(r"\.modules_to_save\.[^.]+\.")
# Biases change no channel direction or magnitude of a weight matrix.
IGNORED = (".lora_B.bias", ".base_layer.bias")


@dataclass
class AdapterModule:
    """The adapter tensors of one module, by role ("A", "B", "magnitude", ...)."""

    path: str
    parts: dict[str, TensorInfo] = field(default_factory=dict)

    @property
    def is_embedding(self) -> bool:
        return "emb_A" in self.parts

    @property
    def factors(self) -> tuple[TensorInfo, TensorInfo] | None:
        """(A, B) for LoRA factors, or None for a trainable-tokens module."""
        if self.is_embedding:
            return self.parts["emb_A"], self.parts["emb_B"]
        if "A" in self.parts:
            return self.parts["A"], self.parts["B"]
        return None


def group_keys(tensors: dict[str, TensorInfo], where: str) -> tuple[dict[str, AdapterModule], dict[str, TensorInfo]]:
    """(adapted modules by path, full tensors by name without ``base_model.model.``)."""
    modules: dict[str, AdapterModule] = {}
    full: dict[str, TensorInfo] = {}
    for key, info in tensors.items():
        name = MODULES_TO_SAVE.sub(".", key[len(PREFIX):] if key.startswith(PREFIX) else key)
        if name.endswith(IGNORED):
            continue
        role = next(((suffix, r) for suffix, r in ROLES if name.endswith(suffix)), None)
        if role is None:
            if "lora_" in name:
                raise UnsupportedError(f"{where}: unrecognized adapter tensor {key!r} (not a PEFT LoRA/DoRA key)")
            full[name] = info
            continue
        suffix, r = role
        path = name[: -len(suffix)]
        modules.setdefault(path, AdapterModule(path)).parts[r] = info
    for m in modules.values():
        _check_complete(m, where)
    return modules, full


def _check_complete(m: AdapterModule, where: str) -> None:
    roles = set(m.parts)
    pairs = ({"A", "B"}, {"emb_A", "emb_B"})
    has = [p for p in pairs if p & roles]
    if len(has) > 1 or any(not p <= roles for p in has):
        raise UnsupportedError(f"{where}: module {m.path!r} has an incomplete set of LoRA factors "
                               f"({', '.join(sorted(roles))})")
    if not has and "tokens" not in roles:
        raise UnsupportedError(f"{where}: module {m.path!r} has {', '.join(sorted(roles))} but no LoRA factors")
