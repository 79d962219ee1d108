"""``dora-diag demo``: FT vs LoRA vs DoRA on the builtin task shift (A -> B), compared with the
base and written as one HTML report. Nothing is downloaded; the task-A base is cached.

Choices (fixed, not tuned to produce any particular sign pattern): adapters on all seven
projections of every block (q/k/v/o and the MLP), rank 8, alpha 16; the same number of steps,
batch size, warmup and schedule for all three methods; the usual learning rates of each family
(1e-3 for full fine-tuning, 4e-3 for low-rank adapters); a checkpoint every 50 of 200 steps.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..analysis.compare import Progress, compare
from ..analysis.verdict import verdict
from ..errors import InputError
from ..options import DEMO_SAVE_EVERY, DEMO_STEPS
from ..outputs.atomic import check_writable
from .builtin import builtin_base
from .trainer import TrainConfig, TrainProgress, train

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
METHOD_LABELS = {"ft": "FT", "lora": "LoRA", "dora": "DoRA"}
PAPER_MODULES = ("q_proj", "v_proj")


@dataclass(frozen=True)
class DemoConfig:
    out: str = "reports/demo.html"
    model: str = "builtin"               # or a builtin model directory to use as the base
    runs_dir: str | None = None          # keep the runs here; default: a temp dir removed afterwards
    steps: int = DEMO_STEPS
    save_every: int = DEMO_SAVE_EVERY
    batch_size: int = 32
    rank: int = 8
    alpha: float = 16.0
    lr: dict[str, float] = field(default_factory=lambda: {"ft": 1e-3, "lora": 4e-3, "dora": 4e-3})
    targets: tuple[str, ...] = ALL_PROJECTIONS
    warmup_fraction: float = 0.1
    seed: int = 0
    threads: int = 1                     # the model is tiny: one thread beats intra-op overhead


@dataclass
class MethodSummary:
    label: str
    run_dir: str
    eval: dict[str, float]               # final eval_loss / eval_accuracy / eval_exact_match
    pearson_r: dict[str, float]          # module -> Pearson r of ΔD vs ΔM (layers x checkpoints)
    n: dict[str, int]


@dataclass
class DemoResult:
    report: str
    base: str
    methods: list[MethodSummary]

    def lines(self) -> list[str]:
        """The printed summary: one line per method."""
        out = []
        for m in self.methods:
            corr = "  ".join(f"r({mod[0].upper()})={_fmt(m.pearson_r.get(mod))} (n={m.n.get(mod, 0)})"
                             for mod in PAPER_MODULES)
            out.append(f"{m.label:<5} eval token acc {m.eval['eval_accuracy']:.3f}  exact match "
                       f"{m.eval['eval_exact_match']:.3f}  {corr}")
        return out


def _fmt(r: float | None) -> str:
    return "n/a" if r is None or math.isnan(r) else f"{r:+.2f}"


def run_configs(cfg: DemoConfig, runs_dir: Path) -> dict[str, TrainConfig]:
    """One TrainConfig per method, identical except method and learning rate."""
    common = TrainConfig(out="", model=cfg.model, data="builtin", rank=cfg.rank, alpha=cfg.alpha,
                         targets=cfg.targets, steps=cfg.steps, save_every=cfg.save_every,
                         batch_size=cfg.batch_size, warmup_steps=int(cfg.steps * cfg.warmup_fraction),
                         seed=cfg.seed, device="cpu")
    return {m: replace(common, out=str(runs_dir / m), method=m, lr=cfg.lr[m]) for m in METHOD_LABELS}


def summarize(analysis, finals: dict[str, dict], run_dirs: dict[str, str]) -> list[MethodSummary]:
    stats = analysis.stats("module")
    out = []
    for method, label in METHOD_LABELS.items():
        rows = stats[(stats["run"] == label) & stats["module"].isin(PAPER_MODULES)]
        out.append(MethodSummary(label, run_dirs[method], finals[method],
                                 {r["module"]: float(r["pearson_r"]) for _, r in rows.iterrows()},
                                 {r["module"]: int(r["n"]) for _, r in rows.iterrows()}))
    return out


def attach_verdicts(analysis) -> None:
    """The report's verdict cards: the one place the demo asks for verdicts."""
    analysis.verdicts = verdict(analysis)


def base_dir(cfg: DemoConfig, runs_dir: Path, seed: int) -> Path:
    """The base a seed's runs started from: the cached base each builtin run copies, or --model."""
    return runs_dir / f"seed{seed}" / "ft" / "base" if cfg.model == "builtin" else Path(cfg.model)


def demo_seed(cfg: DemoConfig, runs_dir: Path, seed: int, report: bool, progress_for, compare_progress,
              status) -> tuple[dict[str, TrainConfig], dict]:
    """Train the three methods for ``seed`` and compare them with the base (writing the report
    when ``report``); returns the run configs and module_r of the comparison."""
    configs = run_configs(cfg, runs_dir, seed)
    for method, tcfg in configs.items():
        status(f"seed {seed}: training {METHOD_LABELS[method]} on task B")
        train(tcfg, progress_for(f"{METHOD_LABELS[method]} seed {seed}") if progress_for else TrainProgress())
    status(f"seed {seed}: comparing with the base")
    analysis = compare(base_dir(cfg, runs_dir, seed), *(f"{METHOD_LABELS[m]}={c.out}" for m, c in configs.items()),
                       device="cpu", progress=compare_progress if report else None)
    if report:
        attach_verdicts(analysis)
        analysis.to_html(cfg.out)
    return configs, module_r(analysis)


def run_demo(cfg: DemoConfig = DemoConfig(), progress_for=None, compare_progress: Progress | None = None,
             status=None) -> DemoResult:
    """Train FT/LoRA/DoRA, compare them with the base, write the report; returns the summary.

    ``progress_for(label)`` gives a TrainProgress per run; ``status(text)`` receives stage messages.
    """
    check_writable(cfg.out)
    status = status or (lambda text: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    own_dir = cfg.runs_dir is None
    runs_dir = Path(tempfile.mkdtemp(prefix="dora-diag-demo-")) if own_dir else Path(cfg.runs_dir)
    try:
        if cfg.model == "builtin":
            status("building/loading the task-A base model")
            builtin_base()
        configs = run_configs(cfg, runs_dir)
        for method, tcfg in configs.items():
            status(f"training {METHOD_LABELS[method]} on task B")
            train(tcfg, progress_for(METHOD_LABELS[method]) if progress_for else TrainProgress())
        base = runs_dir / "ft" / "base" if cfg.model == "builtin" else Path(cfg.model)
        status("comparing with the base")
        analysis = compare(base, *(f"{METHOD_LABELS[m]}={c.out}" for m, c in configs.items()),
                           device="cpu", progress=compare_progress)
        analysis.meta["verdicts"] = verdict(analysis)
        analysis.to_html(cfg.out)
        finals = {m: final_eval(Path(c.out)) for m, c in configs.items()}
        return DemoResult(os.fspath(cfg.out), str(base),
                          summarize(analysis, finals, {m: c.out for m, c in configs.items()}))
    finally:
        torch.set_num_threads(threads)
        if own_dir:
            shutil.rmtree(runs_dir, ignore_errors=True)
