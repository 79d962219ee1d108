"""Tiny random-init transformers models with PEFT adapters (test helpers; needs peft + transformers).

``save_adapter_case`` saves the base model, an adapter with randomized factors (B and DoRA's
magnitude are zero / ‖W0‖ at init, so they are perturbed to make the adapter non-trivial) and
the ``merge_and_unload()`` checkpoint; all in fp32 safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


def qwen3_moe():
    """Fused 3-D experts in memory (gate_up_proj (3, 24, 16), down_proj (3, 16, 12)), saved per expert."""
    cfg = transformers.Qwen3MoeConfig(hidden_size=16, intermediate_size=20, moe_intermediate_size=12,
                                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                      vocab_size=40, num_experts=3, num_experts_per_tok=2, mlp_only_layers=[])
    return transformers.Qwen3MoeForCausalLM(cfg)


def mixtral():
    """As ``qwen3_moe``, saved as ``block_sparse_moe.experts.{e}.w1/w3/w2`` (gate_up_proj (4, 48, 16))."""
    cfg = transformers.MixtralConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                                     num_key_value_heads=1, vocab_size=40, num_local_experts=4, num_experts_per_tok=2)
    return transformers.MixtralForCausalLM(cfg)


def gpt_oss():
    """Experts stored as 3-D (E, in, out) and used as ``x @ W[e]``: gate_up_proj (3, 16, 24), down_proj (3, 12, 16)."""
    cfg = transformers.GptOssConfig(hidden_size=16, intermediate_size=12, num_hidden_layers=2, num_attention_heads=2,
                                    num_key_value_heads=1, head_dim=8, vocab_size=40, num_local_experts=3,
                                    num_experts_per_tok=2)
    return transformers.GptOssForCausalLM(cfg)


def llama4():
    """Experts stored (E, in, out) and used as ``x @ W[e]`` like gpt-oss, but not flagged
    ``is_transposed``: PEFT reads gate_up_proj (3, 16, 24) as in = 24, out = 16."""
    cfg = transformers.Llama4TextConfig(hidden_size=16, intermediate_size=12, intermediate_size_mlp=20,
                                        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                        vocab_size=40, num_local_experts=3, num_experts_per_tok=1,
                                        interleave_moe_layer_step=1, moe_layers=[0, 1], no_rope_layers=[1, 1])
    return transformers.Llama4ForCausalLM(cfg)


MODELS = {"llama": llama, "gpt2": gpt2, "bert": bert_classifier, "qwen3_moe": qwen3_moe, "mixtral": mixtral,
          "gpt_oss": gpt_oss, "llama4": llama4}


@dataclass
class AdapterCase:
    base: Path
    adapter: Path
    merged: Path
    # LoRA on raw parameters: in-memory parameter name -> (A, B, scaling, experts), fp64 copies of
    # the live ParamWrapper's factors (independent of how the file names them)
    param_factors: dict[str, tuple] = field(default_factory=dict)


def param_factors(peft_model) -> dict[str, tuple]:
    out = {}
    for name, module in peft_model.base_model.model.named_modules():
        if type(module).__name__ == "ParamWrapper":
            owner = ".".join(p for p in name.split(".") if p != "base_layer")
            out[f"{owner}.{module.parameter_name}"] = (
                module.lora_A["default"].weight.detach().double().clone(),
                module.lora_B["default"].weight.detach().double().clone(),
                module.scaling["default"], module.num_experts)
    return out


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
    factors = param_factors(peft_model)
    peft_model.merge_and_unload().save_pretrained(merged)
    return AdapterCase(base, adapter, merged, factors)


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
