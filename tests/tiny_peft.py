"""Tiny random-init transformers models with PEFT adapters (test helpers; needs peft + transformers).

``save_adapter_case`` saves the base model, an adapter with randomized factors (B and DoRA's
magnitude are zero / ‖W0‖ at init, so they are perturbed to make the adapter non-trivial) and
the ``merge_and_unload()`` checkpoint; all in fp32 safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import peft
import torch
import transformers


def llama(vocab: int = 96):
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=vocab, tie_word_embeddings=False)
    return transformers.LlamaForCausalLM(cfg)


def gpt2():
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=96, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def bert_classifier():
    cfg = transformers.BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  vocab_size=96, max_position_embeddings=32, num_labels=3)
    return transformers.BertForSequenceClassification(cfg)


MODELS = {"llama": llama, "gpt2": gpt2, "bert": bert_classifier}


@dataclass
class AdapterCase:
    base: Path
    adapter: Path
    merged: Path


def perturb(model, seed: int) -> None:
    """Make every adapter parameter non-trivial: B ~ N(0, 0.2), magnitudes scaled by ~U(0.8, 1.2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if "lora_magnitude_vector" in name:
                p.mul_(0.8 + 0.4 * torch.rand(p.shape, generator=g))
            elif "lora_" in name or "trainable_tokens_delta" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
            else:  # modules_to_save copies
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def save_adapter_case(tmp: Path, model_name: str, seed: int = 0, **lora_kwargs) -> AdapterCase:
    torch.manual_seed(seed)
    model = MODELS[model_name]()
    base, adapter, merged = tmp / "base", tmp / "adapter", tmp / "merged"
    model.save_pretrained(base)
    peft_model = peft.get_peft_model(model, peft.LoraConfig(**lora_kwargs))
    perturb(peft_model, seed + 1)
    peft_model.save_pretrained(adapter)
    peft_model.merge_and_unload().save_pretrained(merged)
    return AdapterCase(base, adapter, merged)


def save_lora_run(root: Path, layers: int = 3, steps: tuple[int, ...] = (5, 10, 15),
                  use_dora: bool = False) -> tuple[Path, Path]:
    """A LLaMA base and a run directory of LoRA (or DoRA) adapter checkpoints (q/v, r=2) whose B
    grows by a random step per checkpoint, so ΔD and ΔM grow together; returns (base, run)."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(root / "base")
    pm = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], use_dora=use_dora))
    g = torch.Generator().manual_seed(1)
    for step in steps:
        with torch.no_grad():
            for name, p in pm.named_parameters():
                if "lora_B" in name:
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
        pm.save_pretrained(root / "run" / f"checkpoint-{step}")
    return root / "base", root / "run"
