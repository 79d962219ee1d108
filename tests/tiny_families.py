"""Tiny random-init models of many architecture families, built by transformers' (and diffusers')
own classes (test helpers; importable as ``tiny_families``).

``FAMILIES[name]()`` returns a model, or raises ``MissingFamily`` where the installed library
lacks the class; ``save_pair`` writes it with ``save_pretrained`` and a perturbed copy.
"""

from __future__ import annotations

from pathlib import Path

import torch


class MissingFamily(Exception):
    """The installed transformers/diffusers has no such class."""


def _tf(cls_name: str, cfg_name: str, **cfg):
    import transformers

    cls, cfg_cls = getattr(transformers, cls_name, None), getattr(transformers, cfg_name, None)
    if cls is None or cfg_cls is None:
        raise MissingFamily(cls_name)
    return cls(cfg_cls(**cfg))


_TEXT = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2, vocab_size=40)


def _unet():
    try:
        from diffusers import UNet2DConditionModel
    except ImportError:
        raise MissingFamily("diffusers") from None
    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4)


FAMILIES = {
    "llama": lambda: _tf("LlamaForCausalLM", "LlamaConfig", **_TEXT, num_key_value_heads=1),
    "gpt2": lambda: _tf("GPT2LMHeadModel", "GPT2Config", n_embd=16, n_layer=2, n_head=2, vocab_size=40, n_positions=8),
    "bert": lambda: _tf("BertForSequenceClassification", "BertConfig", **_TEXT, max_position_embeddings=8),
    "t5": lambda: _tf("T5ForConditionalGeneration", "T5Config", d_model=16, d_ff=24, d_kv=8, num_layers=2,
                      num_heads=2, vocab_size=40),
    "clip": lambda: _tf("CLIPModel", "CLIPConfig", projection_dim=8,
                        text_config=dict(_TEXT, max_position_embeddings=8),
                        vision_config=dict(_TEXT, image_size=8, patch_size=4)),
    "vit": lambda: _tf("ViTForImageClassification", "ViTConfig", **_TEXT, image_size=8, patch_size=4, num_labels=3),
    "resnet": lambda: _tf("ResNetModel", "ResNetConfig", embedding_size=8, hidden_sizes=[8, 16], depths=[2, 1],
                          layer_type="basic"),
    "clvp": lambda: _tf("ClvpModelForConditionalGeneration", "ClvpConfig",
                        text_config=_TEXT, speech_config=_TEXT,
                        decoder_config=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, vocab_size=40,
                                            max_position_embeddings=16, max_text_tokens=16, num_mel_attn_blocks=1,
                                            feature_size=8)),
    "mixtral": lambda: _tf("MixtralForCausalLM", "MixtralConfig", **_TEXT, num_key_value_heads=1,
                           num_local_experts=3, num_experts_per_tok=1),
    "qwen2_moe": lambda: _tf("Qwen2MoeForCausalLM", "Qwen2MoeConfig", **_TEXT, num_key_value_heads=1,
                             moe_intermediate_size=8, shared_expert_intermediate_size=8, num_experts=3,
                             num_experts_per_tok=1),
    "codegen": lambda: _tf("CodeGenForCausalLM", "CodeGenConfig", n_embd=32, n_layer=2, n_head=4, rotary_dim=4,
                           vocab_size=40, n_positions=8),
    "gpt_bigcode": lambda: _tf("GPTBigCodeForCausalLM", "GPTBigCodeConfig", n_embd=16, n_layer=2, n_head=2,
                               vocab_size=40, n_positions=8, multi_query=False),
    "swin": lambda: _tf("SwinModel", "SwinConfig", image_size=16, patch_size=4, embed_dim=8, depths=[2, 1],
                        num_heads=[2, 2], window_size=2),
    "convnext": lambda: _tf("ConvNextModel", "ConvNextConfig", hidden_sizes=[8, 16], depths=[2, 1], num_stages=2),
    "whisper": lambda: _tf("WhisperForConditionalGeneration", "WhisperConfig", d_model=16, encoder_layers=2,
                           decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24,
                           decoder_ffn_dim=24, num_mel_bins=8, max_source_positions=8, max_target_positions=8,
                           vocab_size=40, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=0),
    "bart": lambda: _tf("BartForConditionalGeneration", "BartConfig", d_model=16, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24,
                        vocab_size=40, max_position_embeddings=8),
    "unet": _unet,
}


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return FAMILIES[name]().eval()


def perturb_(model, scale: float = 1e-2, seed: int = 1) -> None:
    """Every parameter moves by ``scale``·N(0, 1): a stand-in for a few optimizer steps."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def save_pair(model, root: Path) -> tuple[Path, Path]:
    """(base, fine-tuned) directories written by the model's own ``save_pretrained``."""
    model.save_pretrained(root / "base")
    perturb_(model)
    model.save_pretrained(root / "ft")
    return root / "base", root / "ft"
