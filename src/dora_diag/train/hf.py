"""Hugging Face models for ``--model PATH`` (needs the optional ``hf`` extra: transformers).

The task follows the data: JSONL ``{"text"}`` or ``{"prompt","completion"}`` -> causal LM,
``{"text","label"}`` -> sequence classification. The tokenizer comes from the model directory.
Weights load from safetensors only; nothing is downloaded (``local_files_only``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .data import read_jsonl, record_kind, tokenize_records

INSTALL_HINT = "pip install 'dora-diag[hf]' (or: pip install transformers)"


def require_transformers():
    """The transformers module, or an InputError saying what to install."""
    try:
        import transformers
    except ImportError:
        raise InputError(f"a Hugging Face model needs transformers; install it with {INSTALL_HINT}") from None
    return transformers


def load_hf_model(path: str | Path, kind: str, num_labels: int = 2):
    """A model for ``kind`` ("causal-lm" or "classification") from a local directory, float32."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise InputError(f"{p}: not a model directory (no config.json); the model is 'builtin' or a "
                         "local Hugging Face model directory")
    tf = require_transformers()
    auto = tf.AutoModelForCausalLM if kind == "causal-lm" else tf.AutoModelForSequenceClassification
    extra = {} if kind == "causal-lm" else {"num_labels": num_labels}
    try:
        return auto.from_pretrained(str(p), local_files_only=True, use_safetensors=True, **extra)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{p}: cannot load as a {kind} model ({str(e).splitlines()[0]})") from None


def load_tokenizer(path: str | Path):
    tf = require_transformers()
    try:
        tok = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: no usable tokenizer in the model directory ({str(e).splitlines()[0]})") from None
    return tok


def hf_setup(model: str, data: str, max_length: int, eval_fraction: float, seed: int):
    """Setup for a Hugging Face model directory trained on a JSONL file."""
    from .loop import Setup
    if data == "builtin":
        raise InputError("data='builtin' works with the builtin model only; give a JSONL file for a Hugging Face model")
    records = read_jsonl(data)
    kind = record_kind(records, data)
    tokenizer = load_tokenizer(model)
    tokens = tokenize_records(records, tokenizer, max_length, data)
    net = load_hf_model(model, kind, max(2, len(tokens.label_names)))
    if kind == "classification" and net.config.pad_token_id is None:
        net.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train, held_out = tokens.split(eval_fraction, seed)
    return Setup(net, train, held_out, str(model))
