"""Synthetic LLaMA-shaped, sharded bf16 checkpoints of a chosen size, written shard by shard.

Memory stays at one shard (~512 MB) whatever the total size, so a pair larger than RAM can be
generated. Fine-tuned checkpoints are the base plus small full-rank noise (ΔD ~ 1e-5).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

HIDDEN, INTER = 2048, 5632
LAYER_SHAPES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
                "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
                "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN), "mlp.down_proj": (HIDDEN, INTER)}
VOCAB = 32000
SHARD_BYTES = 512 * 1024 * 1024


def layer_bytes() -> int:
    return sum(o * i for o, i in LAYER_SHAPES.values()) * 2 + 2 * HIDDEN * 2


def tensor_plan(size_bytes: int) -> list[tuple[str, tuple[int, ...]]]:
    layers = max(1, (size_bytes - 2 * VOCAB * HIDDEN * 2) // layer_bytes())
    plan = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        plan += [(f"model.layers.{i}.{m}.weight", s) for m, s in LAYER_SHAPES.items()]
        plan += [(f"model.layers.{i}.input_layernorm.weight", (HIDDEN,)),
                 (f"model.layers.{i}.post_attention_layernorm.weight", (HIDDEN,))]
    return plan + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def _tensor(name: str, shape: tuple[int, ...], seed: int, noise_seed: int | None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if len(shape) == 1:
        return torch.ones(shape, dtype=torch.bfloat16)
    w = torch.randn(shape, generator=g) * shape[-1] ** -0.5
    if noise_seed is not None:
        n = torch.Generator().manual_seed(noise_seed)
        w += 3e-3 * shape[-1] ** -0.5 * torch.randn(shape, generator=n)
    return w.to(torch.bfloat16)


def write(directory: Path, size_bytes: int, noise_seed: int | None) -> None:
    """Write a checkpoint (base when ``noise_seed`` is None) as index-sharded safetensors."""
    directory.mkdir(parents=True, exist_ok=True)
    plan = tensor_plan(size_bytes)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    used = 0
    for name, shape in plan:
        nbytes = 2 * torch.Size(shape).numel()
        if used and used + nbytes > SHARD_BYTES:
            shards.append([])
            used = 0
        shards[-1].append((name, shape))
        used += nbytes
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: _tensor(name, shape, seed=_seed(name),
                                 noise_seed=None if noise_seed is None else noise_seed * 100003 + _seed(name))
                   for name, shape in shard}
        save_file(tensors, str(directory / fname))
        weight_map.update({name: fname for name, _ in shard})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": INTER, "num_attention_heads": 16,
        "num_key_value_heads": 16, "num_hidden_layers": sum(1 for n, _ in plan if n.endswith("q_proj.weight")),
        "vocab_size": VOCAB}))


def ensure(directory: Path, size_bytes: int, noise_seed: int | None) -> Path:
    """``write`` the checkpoint unless an earlier run left it there (its index is written last)."""
    if not (directory / "model.safetensors.index.json").is_file():
        print(f"generating {directory} ...", file=sys.stderr)
        write(directory, size_bytes, noise_seed)
    return directory


def _seed(name: str) -> int:
    # A stable per-name seed (Python's hash() is salted per process).
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) % 2**31


def files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors"))


def write_adapter(directory: Path, base: Path, rank: int, targets: tuple[str, ...]) -> None:
    """A PEFT LoRA adapter (rank ``rank``, random non-zero B) on ``targets`` of ``base``."""
    directory.mkdir(parents=True, exist_ok=True)
    index = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name in index:
        module = name[: -len(".weight")]
        if not module.endswith(targets):
            continue
        out, inp = _module_shape(module)
        tensors[f"base_model.model.{module}.lora_A.weight"] = torch.randn(rank, inp, generator=g) * inp ** -0.5
        tensors[f"base_model.model.{module}.lora_B.weight"] = torch.randn(out, rank, generator=g) * 1e-3
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(targets),
        "use_dora": False, "use_rslora": False, "fan_in_fan_out": False, "bias": "none"}))


def targeted_bytes(base: Path, targets: tuple[str, ...]) -> int:
    index = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
    modules = [n[: -len(".weight")] for n in index]
    return sum(2 * _module_shape(m)[0] * _module_shape(m)[1] for m in modules if m.endswith(targets))


def _module_shape(module: str) -> tuple[int, int]:
    """(out, in) of ``model.layers.N.self_attn.q_proj`` and the like."""
    return LAYER_SHAPES[".".join(module.split(".")[-2:])]
