"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
import torch

from ckpt_helpers import write_checkpoint
from dora_diag.train.model import BuiltinConfig, BuiltinTransformer, save_full_model

torch.set_num_threads(2)


# A small builtin-architecture model: 2 layers, hidden 32 (trainer, trial and method tests).
SMALL = BuiltinConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A random ``SMALL`` base saved as a model directory."""
    d = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    save_full_model(BuiltinTransformer(SMALL), d)
    return d


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one torch thread avoids oversubscribing shared 2-core machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_pair(tmp_path):
    """Write a base/fine-tuned pair of LLaMA-named checkpoints; returns (base_dir, ft_dir, base, ft)."""

    def make(layers: int = 3, out: int = 48, inp: int = 64, dtype=torch.float32, scale: float = 1e-2,
             seed: int = 0, modules=("q_proj", "v_proj"), ft_name: str = "ft"):
        g = torch.Generator().manual_seed(seed)
        base = {}
        for layer in range(layers):
            for m in modules:
                base[f"model.layers.{layer}.self_attn.{m}.weight"] = torch.randn(out, inp, generator=g).to(dtype)
            base[f"model.layers.{layer}.input_layernorm.weight"] = torch.ones(inp, dtype=dtype)
        ft = {k: (v.double() + scale * torch.randn(v.shape, generator=g, dtype=torch.float64)).to(dtype)
              if v.dim() == 2 else v.clone() for k, v in base.items()}
        cfg = {"model_type": "llama", "hidden_size": inp, "num_attention_heads": 4}
        b = write_checkpoint(tmp_path / "base", base, cfg)
        f = write_checkpoint(tmp_path / ft_name, ft, cfg)
        return b, f, base, ft

    return make
