"""Which axis of a stored tensor holds its output channels: decided here, once, for every reader.

Output channels are the stored rows (the first axis; each expert's rows of a 3-D experts
stack) unless the layer type stores the transpose. Which ones do is a fact about the model
class, never guessed from a shape, kept as data in ``registry`` (read from transformers'
modeling source when installed):

- transformers ``Conv1D`` weights are (in, out) (``registry.is_transposed``);
- experts used as ``x @ W[e]`` (Llama 4, gpt-oss) are (E, in, out) (``registry.experts_transposed``).

Convolution kernels (out, in, k...), embeddings (vocab, dim) and N-D vector stacks (ViT's
``position_embeddings``) have their channels along the first axis; an unknown model type
is read as nn.Linear (``registry.orientation_notes`` warns where that is a guess).
"""

from __future__ import annotations

from .registry import experts_transposed, is_transposed


def is_vector_stack(name: str, shape: tuple[int, ...]) -> bool:
    """N-D (3+) and not a module's ``weight``: nn.Conv* kernels are the N-D ``.weight`` tensors."""
    return len(shape) > 2 and not name.endswith(".weight")


def is_experts_stack(name: str, shape: tuple[int, ...]) -> bool:
    """A 3-D parameter of an ``experts`` module: ``mlp.experts.gate_up_proj``."""
    return is_vector_stack(name, shape) and len(shape) == 3 and ".experts." in f".{name}"


def stored_transposed(model_type: str | None, name: str, shape: tuple[int, ...]) -> bool:
    """True when the output channels of the stored tensor ``name`` are its stored columns (the
    last axis): a 2-D Conv1D weight (in, out), or each (in, out) expert of an experts stack."""
    module_path = name.removesuffix(".weight")
    if is_experts_stack(name, shape):
        return experts_transposed(model_type, module_path)
    return len(shape) == 2 and is_transposed(model_type, module_path)
