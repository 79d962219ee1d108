"""Write a small sample base checkpoint and two fine-tuned runs to compare.

    python examples/make_sample_pair.py sample/
    dora-diag compare sample/base FT=sample/ft LoRA=sample/lora --out sample/report.html

The weights are synthetic (a LLaMA-shaped 4-layer stack): "ft" perturbs every weight with
independent full-rank noise, "lora" adds a growing rank-4 update to q/v only. It exercises the
file formats and the report; it says nothing about real fine-tuning — `dora-diag demo` does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

MODULES = {"self_attn.q_proj": (64, 64), "self_attn.k_proj": (32, 64), "self_attn.v_proj": (32, 64),
           "self_attn.o_proj": (64, 64), "mlp.gate_proj": (128, 64), "mlp.up_proj": (128, 64),
           "mlp.down_proj": (64, 128)}
CONFIG = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
          "intermediate_size": 128, "num_hidden_layers": 4}


def base_weights(g: torch.Generator) -> dict[str, torch.Tensor]:
    w = {"model.embed_tokens.weight": torch.randn(100, 64, generator=g) * 0.02}
    for layer in range(CONFIG["num_hidden_layers"]):
        for name, shape in MODULES.items():
            w[f"model.layers.{layer}.{name}.weight"] = torch.randn(*shape, generator=g) / shape[1] ** 0.5
        w[f"model.layers.{layer}.input_layernorm.weight"] = torch.ones(64)
    return w


def save(directory: Path, weights: dict[str, torch.Tensor], step: int | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(CONFIG))
    if step is not None:
        (directory / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def main(out: Path) -> None:
    g = torch.Generator().manual_seed(0)
    base = base_weights(g)
    save(out / "base", base)
    for step in (100, 200, 300):
        ft = {k: v + 2e-3 * step / 100 * torch.randn(v.shape, generator=g) * v.std() if v.dim() == 2 else v
              for k, v in base.items()}
        save(out / "ft" / f"checkpoint-{step}", ft, step)
        lora = dict(base)
        for k, v in base.items():
            if k.endswith(("q_proj.weight", "v_proj.weight")):
                b = torch.randn(v.shape[0], 4, generator=g) * 0.05 * step / 100
                a = torch.randn(4, v.shape[1], generator=g) / v.shape[1] ** 0.5
                lora[k] = v + b @ a
        save(out / "lora" / f"checkpoint-{step}", lora, step)
    print(f"wrote {out}/base, {out}/ft and {out}/lora")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "sample"))
