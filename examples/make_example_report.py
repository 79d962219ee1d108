"""Regenerate reports/example.html and reports/report-screenshot.png.

Writes a tiny LLaMA-shaped base model and three runs of four checkpoints each, with the
update patterns the DoRA paper describes (Figure 2): full fine-tuning whose magnitude and
direction changes move apart across layers, a LoRA run (PEFT adapters) whose low-rank updates
change both together, and a DoRA run (PEFT adapters with magnitude vectors). Then it compares
them, attaches the verdicts, writes the report and opens it in headless Chromium to check that
every figure draws and to take the screenshot.

    python examples/make_example_report.py [--out-dir reports]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

import dora_diag
from dora_diag.analysis.verdict import verdict
from dora_diag.outputs.atomic import write_atomic
from dora_diag.report.browser import Browser

LAYERS, HIDDEN, MLP, RANK = 8, 64, 128, 4
STEPS = (100, 200, 300, 400)
SHAPES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
          "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
          "mlp.gate_proj": (MLP, HIDDEN), "mlp.up_proj": (MLP, HIDDEN), "mlp.down_proj": (HIDDEN, MLP)}
CONFIG = {"model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": MLP, "num_hidden_layers": LAYERS,
          "num_attention_heads": 4, "vocab_size": 256}


def weight_names() -> list[str]:
    return [f"model.layers.{i}.{m}.weight" for i in range(LAYERS) for m in SHAPES]


def base_model(g: torch.Generator) -> dict[str, torch.Tensor]:
    w = {f"model.layers.{i}.{m}.weight": torch.randn(shape, generator=g) / shape[1] ** 0.5
         for i in range(LAYERS) for m, shape in SHAPES.items()}
    w["model.embed_tokens.weight"] = torch.randn(CONFIG["vocab_size"], HIDDEN, generator=g)
    w["lm_head.weight"] = torch.randn(CONFIG["vocab_size"], HIDDEN, generator=g)
    for i in range(LAYERS):
        w[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(HIDDEN)
    return w


def trainer_state(step: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    log = [{"step": s, "loss": round(2.4 * (1 + s / 80) ** -0.5 + 0.05 * float(torch.rand(1, generator=g)), 4)}
           for s in range(10, step + 1, 10)]
    log += [{"step": s, "eval_loss": round(2.3 * (1 + s / 80) ** -0.45, 4)} for s in range(100, step + 1, 100)]
    return {"global_step": step, "log_history": log}


def rownorm(w: torch.Tensor) -> torch.Tensor:
    return w.norm(dim=1, keepdim=True)


def full_run(root: Path, base: dict, g: torch.Generator) -> None:
    """Per layer a share u: turn the rows by ~u, rescale them by ~(1 - u): direction and magnitude move apart."""
    share = {n: float(torch.rand(1, generator=g)) for n in weight_names()}
    noise = {n: torch.randn(base[n].shape, generator=g) for n in weight_names()}
    for t, step in enumerate(STEPS, start=1):
        frac = t / len(STEPS)
        ft = dict(base)
        for n in weight_names():
            w0, u = base[n], share[n] + 0.05 * float(torch.randn(1, generator=g))
            turned = w0 + 0.04 * frac ** 0.5 * (0.2 + u) * rownorm(w0) * noise[n] / noise[n].shape[1] ** 0.5
            ft[n] = turned / rownorm(turned) * rownorm(w0) * (1 + 0.03 * (1.3 - u) * (0.8 + 0.2 * frac))
        _save_full(root / f"checkpoint-{step}", ft, trainer_state(step, 1))


def adapter_run(root: Path, base: dict, g: torch.Generator, dora: bool) -> None:
    """LoRA factors that grow with training (B starts at zero); DoRA adds a magnitude vector."""
    alpha = 2 * RANK
    a = {n: torch.randn(RANK, base[n].shape[1], generator=g) / base[n].shape[1] ** 0.5 for n in weight_names()}
    b_dir = {n: torch.randn(base[n].shape[0], RANK, generator=g) for n in weight_names()}
    layer_gain = {n: 0.5 + float(torch.rand(1, generator=g)) for n in weight_names()}
    for t, step in enumerate(STEPS, start=1):
        tensors = {}
        for n in weight_names():
            key = "base_model.model." + n.removesuffix(".weight")
            b = 0.02 * t / len(STEPS) * layer_gain[n] * b_dir[n]
            tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"] = a[n], b
            if dora:
                # The magnitude learns against the direction change: less rescaling where rows turned more.
                tensors[f"{key}.lora_magnitude_vector"] = (
                    rownorm(base[n]) * (1 + 0.03 * (0.85 + 0.15 * t / len(STEPS)) * (1.7 - layer_gain[n]))).squeeze(1)
        ckpt = root / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(ckpt / "adapter_model.safetensors"))
        (ckpt / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "r": RANK, "lora_alpha": alpha, "use_dora": dora, "use_rslora": False,
            "target_modules": sorted({m.split(".")[-1] for m in SHAPES}), "fan_in_fan_out": False,
            "base_model_name_or_path": "tiny-llama", "task_type": "CAUSAL_LM"}))
        (ckpt / "trainer_state.json").write_text(json.dumps(trainer_state(step, 2 + dora)))


def _save_full(directory: Path, tensors: dict, state: dict) -> None:
    directory.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(CONFIG))
    (directory / "trainer_state.json").write_text(json.dumps(state))


def build(work: Path) -> dora_diag.Analysis:
    g = torch.Generator().manual_seed(2024)
    base = base_model(g)
    _save_full(work / "base", base, {"global_step": 0})
    full_run(work / "full-ft", base, g)
    adapter_run(work / "lora-r4", base, g, dora=False)
    adapter_run(work / "dora-r4", base, g, dora=True)
    analysis = dora_diag.compare(work / "base", f"FT={work / 'full-ft'}", f"LoRA={work / 'lora-r4'}",
                                 f"DoRA={work / 'dora-r4'}")
    analysis.meta["verdicts"] = verdict(analysis)
    # Show paths relative to the scratch directory: the temporary prefix means nothing to a reader.
    analysis.meta["base"] = "base"
    for run in analysis.meta["runs"]:
        run["path"] = str(Path(run["path"]).relative_to(work))
        for c in run["checkpoints"]:
            c["path"] = str(Path(c["path"]).relative_to(work))
    return analysis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "reports")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        analysis = build(Path(tmp))
    html_path = args.out_dir / "example.html"
    analysis.to_html(html_path)
    for v in analysis.meta["verdicts"]:
        print(f"{v['run']}: {v['headline']}")
    started = time.perf_counter()
    with Browser(height=900) as browser:
        page = browser.open(html_path, screenshot=True, screenshot_height=4200)
    s = page.status
    if page.errors or s.get("error") or s.get("drawn") != s.get("figures"):
        raise SystemExit(f"report did not draw cleanly: {page.errors or s.get('error')}, "
                         f"{s.get('drawn')}/{s.get('figures')} figures")
    write_atomic(args.out_dir / "report-screenshot.png", page.screenshot)
    print(f"{html_path}: {html_path.stat().st_size / 1e6:.1f} MB, {s['figures']} figures; in Chromium the first "
          f"figure drew at {s['first_ms']} ms and all at {s['render_ms']} ms "
          f"({time.perf_counter() - started:.1f} s with browser start)")


if __name__ == "__main__":
    main()
