"""The builtin model: a small LLaMA-style decoder in plain torch (no transformers needed).

Module names follow Hugging Face LLaMA (``layers.{i}.self_attn.q_proj``, ``mlp.gate_proj``,
``embed_tokens``, ``lm_head``), so the analyzer and PEFT-style adapter keys name them the same
way. Shapes: input_ids (batch, seq) int64 -> logits (batch, seq, vocab), or (batch, num_labels)
with a classification head (``score``, read at the last position).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save

from ..errors import InputError
from ..io.checkpoint import read_json
from ..outputs.atomic import write_atomic

MODEL_TYPE = "dora-diag-builtin"


@dataclass(frozen=True)
class BuiltinConfig:
    vocab_size: int = 18
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 32
    num_labels: int = 0            # 0: language-model head; > 0: classification head
    rms_norm_eps: float = 1e-6

    def to_dict(self) -> dict:
        return {"model_type": MODEL_TYPE, "architectures": ["DoraDiagBuiltinTransformer"], **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "BuiltinConfig":
        if d.get("model_type") != MODEL_TYPE:
            raise InputError(f"config.json model_type is {d.get('model_type')!r}, expected {MODEL_TYPE!r}")
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        if cfg.hidden_size % cfg.num_attention_heads:
            raise InputError("config.json: hidden_size must be a multiple of num_attention_heads")
        return cfg


class RMSNorm(torch.nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class Attention(torch.nn.Module):
    def __init__(self, cfg: BuiltinConfig):
        super().__init__()
        d = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.q_proj, self.k_proj = torch.nn.Linear(d, d, bias=False), torch.nn.Linear(d, d, bias=False)
        self.v_proj, self.o_proj = torch.nn.Linear(d, d, bias=False), torch.nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, seq, hidden) -> (batch, seq, hidden), causal."""
        b, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                             is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, d))


class MLP(torch.nn.Module):
    def __init__(self, cfg: BuiltinConfig):
        super().__init__()
        d, h = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj, self.up_proj = torch.nn.Linear(d, h, bias=False), torch.nn.Linear(d, h, bias=False)
        self.down_proj = torch.nn.Linear(h, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(torch.nn.Module):
    def __init__(self, cfg: BuiltinConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class BuiltinTransformer(torch.nn.Module):
    """Pre-norm decoder with learned absolute positions."""

    def __init__(self, cfg: BuiltinConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = torch.nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.embed_positions = torch.nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.layers = torch.nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if cfg.num_labels:
            self.score = torch.nn.Linear(cfg.hidden_size, cfg.num_labels, bias=False)
        else:
            self.lm_head = torch.nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.apply(_init_weights)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (batch, seq) -> logits (batch, seq, vocab) or (batch, num_labels)."""
        t = input_ids.shape[1]
        if t > self.config.max_position_embeddings:
            raise InputError(f"sequence length {t} exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        x = self.embed_tokens(input_ids) + self.embed_positions(torch.arange(t, device=input_ids.device))
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return self.score(x[:, -1]) if self.config.num_labels else self.lm_head(x)


def _init_weights(module: torch.nn.Module) -> None:
    if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
        torch.nn.init.normal_(module.weight, std=0.02)


def unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict on CPU, each storage once (tied weights keep their first name, as HF saves them)."""
    seen, out = set(), {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            out[name] = t.detach().contiguous().cpu()
    return out


def save_full_model(model: torch.nn.Module, directory: str | Path) -> None:
    """Write ``model.safetensors`` + ``config.json`` into an existing directory (builtin or HF model)."""
    d = Path(directory)
    config = model.config
    text = (config.to_json_string(use_diff=False) if hasattr(config, "to_json_string")
            else json.dumps(config.to_dict(), indent=2) + "\n")
    write_atomic(d / "model.safetensors", save(unique_state(model), metadata={"format": "pt"}))
    write_atomic(d / "config.json", text)


def is_builtin_dir(directory: str | Path) -> bool:
    cfg = Path(directory) / "config.json"
    return cfg.is_file() and read_json(cfg, "config.json").get("model_type") == MODEL_TYPE


def load_builtin(directory: str | Path) -> BuiltinTransformer:
    """Load a builtin model directory written by ``save_full_model`` (safetensors only, never pickle)."""
    d = Path(directory)
    cfg = BuiltinConfig.from_dict(read_json(d / "config.json", "config.json"))
    weights = d / "model.safetensors"
    if not weights.is_file():
        raise InputError(f"{d}: no model.safetensors")
    model = BuiltinTransformer(cfg)
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    if missing or unexpected:
        raise InputError(f"{weights}: tensors do not fit the config "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model
