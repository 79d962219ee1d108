"""Which modules store their weight (in, out): transformers' ``Conv1D``, the transpose of nn.Linear.

It is a fact about the model class, never guessed from a shape (a square ``c_proj`` looks
exactly like a Linear). With transformers installed it is read from the model's own modeling
source (the attributes assigned a ``Conv1D(...)``), without importing transformers;
``registry.TRANSPOSED_MODULES`` covers the families known when it is not.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

_ASSIGNED = re.compile(r"self\.(\w+)\s*=\s*Conv1D\(")
_MODEL_TYPE = re.compile(r"[A-Za-z0-9_-]+")
_DECLARED = re.compile(r'^\s+model_type = "([A-Za-z0-9_-]+)"', re.M)
_RIGHT_OPERAND = re.compile(r"(?:bmm\([^\n]*,\s*|@\s*)self\.(\w+)")
_FLAGGED_TRANSPOSED = re.compile(r"@use_experts_implementation\([^)]*\bis_transposed\s*=\s*True")
# Leaf names that Conv1D layers use: a checkpoint of unknown type with these cannot be oriented.
CONV1D_STYLE = re.compile(r"(^|\.)(c_attn|q_attn|c_fc|c_proj)$")


@lru_cache(maxsize=None)
def _models_dir() -> Path | None:
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@lru_cache(maxsize=1)
def _declared_dirs() -> dict[str, Path]:
    """model_type -> its model directory, from the ``model_type = "..."`` of every config class
    (``clvp_decoder`` lives in ``clvp/``, ``openai-gpt`` in ``openai/``)."""
    models = _models_dir()
    found: dict[str, Path] = {}
    for path in sorted(models.glob("*/configuration_*.py")) if models else []:
        for model_type in _DECLARED.findall(path.read_text(encoding="utf-8", errors="replace")):
            found.setdefault(model_type, path.parent)
    return found


@lru_cache(maxsize=256)
def _modeling_source(model_type: str) -> str | None:
    """The text of ``model_type``'s modeling file(s) in the installed transformers, or None."""
    models = _models_dir()
    if models is None or not _MODEL_TYPE.fullmatch(model_type):
        return None
    directory = models / model_type.replace("-", "_")
    if not directory.is_dir():
        directory = _declared_dirs().get(model_type)
    sources = sorted(directory.glob("modeling_*.py")) if directory else []
    if not sources:
        return None
    return "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in sources)


def conv1d_attributes(model_type: str) -> frozenset[str] | None:
    """Attribute names assigned a ``Conv1D`` in ``model_type``'s modeling file(s), empty if
    none; None when transformers is not installed or does not know the model type."""
    source = _modeling_source(model_type)
    return None if source is None else frozenset(_ASSIGNED.findall(source))


def right_operand_attributes(model_type: str) -> frozenset[str] | None:
    """Parameters the forward multiplies from the right (``x @ self.W[e]``, ``bmm(x, self.W)``):
    stored (in, out) per expert, like Llama 4's and gpt-oss' experts; None as above."""
    source = _modeling_source(model_type)
    return None if source is None else frozenset(_RIGHT_OPERAND.findall(source))


def flags_experts_transposed(model_type: str) -> bool | None:
    """Whether ``model_type``'s experts class is declared ``@use_experts_implementation(is_transposed=True)``:
    the ``is_transposed`` attribute PEFT's ``ParamWrapper`` reads its factors by; None as above."""
    source = _modeling_source(model_type)
    return None if source is None else bool(_FLAGGED_TRANSPOSED.search(source))


def is_conv1d_module(module) -> bool:
    """A live ``transformers.pytorch_utils.Conv1D`` (weight (in=nx, out=nf), forward x @ W + b),
    recognised by class name and attributes so that transformers is never imported."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and getattr(weight, "ndim", None) == 2
            and hasattr(module, "nf") and tuple(weight.shape) == (module.nx, module.nf))
