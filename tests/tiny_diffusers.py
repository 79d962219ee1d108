"""diffusers test cases (importable as ``tiny_diffusers``): a tiny Stable Diffusion pipeline saved
by diffusers' ``save_pretrained``, LoRA/DoRA on its UNet and text encoder saved by
``save_lora_weights``, and the pipeline with those adapters fused by diffusers itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

UNET_LORA = dict(r=2, lora_alpha=6, target_modules=["to_q", "to_v", "conv1"])
TEXT_LORA = dict(r=4, lora_alpha=2, target_modules=["q_proj", "v_proj"])


@dataclass
class DiffusersCase:
    base: Path      # pipeline directory (model_index.json, unet/, vae/, text_encoder/, scheduler/)
    lora: Path      # directory with pytorch_lora_weights.safetensors
    merged: Path    # pipeline directory with the LoRA fused


def components(seed: int = 0):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=12, norm_num_groups=4, attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=(4,), norm_num_groups=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",))
    text = CLIPTextModel(CLIPTextConfig(hidden_size=12, intermediate_size=16, num_hidden_layers=2,
                                        num_attention_heads=2, vocab_size=50, max_position_embeddings=16))
    return unet, vae, text


def save_pipeline(directory: Path, unet, vae, text) -> Path:
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=None, unet=unet, scheduler=DDPMScheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(directory))
    return directory


def make_case(directory: Path, use_dora: bool = False, metadata: bool = True) -> DiffusersCase:
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.lora_base import fuse_text_encoder_lora
    from diffusers.utils.peft_utils import recurse_remove_peft_layers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    unet, vae, text = components()
    base = save_pipeline(directory / "base", unet, vae, text)
    unet_cfg = LoraConfig(**UNET_LORA, use_dora=use_dora, init_lora_weights=False)
    text_cfg = LoraConfig(**TEXT_LORA, use_dora=use_dora, init_lora_weights=False)
    unet.add_adapter(unet_cfg)
    text = inject_adapter_in_model(text_cfg, text)
    with torch.no_grad():   # a trained-looking magnitude, not the initial ‖W0‖
        for name, p in [*unet.named_parameters(), *text.named_parameters()]:
            if "lora_magnitude_vector" in name:
                p.mul_(1 + 0.2 * torch.randn_like(p))
    extra = dict(unet_lora_adapter_metadata=unet_cfg.to_dict(),
                 text_encoder_lora_adapter_metadata=text_cfg.to_dict()) if metadata else {}
    lora = directory / "lora"
    StableDiffusionPipeline.save_lora_weights(str(lora), unet_lora_layers=get_peft_model_state_dict(unet),
                                              text_encoder_lora_layers=get_peft_model_state_dict(text), **extra)
    unet.fuse_lora()
    unet.unload_lora()
    fuse_text_encoder_lora(text)
    recurse_remove_peft_layers(text)
    merged = save_pipeline(directory / "merged", unet, vae, text)
    return DiffusersCase(base, lora, merged)


def make_kohya_case(directory: Path, **network_kwargs) -> DiffusersCase:
    """A kohya-style LyCORIS file (``lora_unet_``/``lora_te_`` keys) from lycoris-lora's
    ``create_network`` on the pipeline's UNet and text encoder, and their LyCORIS merge."""
    from lycoris.kohya import create_network

    unet, vae, text = components()
    base = save_pipeline(directory / "base", unet, vae, text)
    net = create_network(1.0, 4, 2, vae, text, unet, **network_kwargs)
    net.apply_to(text, unet, apply_text_encoder=True, apply_unet=True)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(p * (1 + 0.2 * torch.randn_like(p)) if "dora_scale" in name else torch.randn_like(p) * 0.3)
    lora = directory / "kohya.safetensors"
    net.save_weights(str(lora), torch.float32, {})
    net.merge_to(text, unet, dict.fromkeys(net.state_dict()), torch.float32, "cpu")
    net.restore()
    merged = save_pipeline(directory / "merged", unet, vae, text)
    return DiffusersCase(base, lora, merged)
