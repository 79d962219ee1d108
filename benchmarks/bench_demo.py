"""The demo's numbers for the README: `dora-diag demo` over its seeds, timed, into reports/demo.md.

    python benchmarks/bench_demo.py [--seeds 3]

Builds the task-A base in a fresh cache (timed on its own), then runs the demo exactly as
`dora-diag demo` does (DemoConfig defaults) and records its printed summary, the per-seed
values, and the CPU and wall time of each part.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from dora_diag.demo import PAPER_MODULES, DemoConfig, run_demo
from dora_diag.outputs.atomic import write_atomic
from dora_diag.train.builtin import builtin_base

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_section import command_line  # noqa: E402

REPORT = Path(__file__).resolve().parents[1] / "reports" / "demo.md"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn):
    cpu, wall = _cpu(), time.perf_counter()
    out = fn()
    return out, _cpu() - cpu, time.perf_counter() - wall


def render(result, base_t: tuple[float, float], demo_t: tuple[float, float]) -> str:
    lines = ["# The demo (`dora-diag demo`)", "", f"Command: `{command_line()}`  ",
             f"torch {torch.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPU cores, "
             f"load average {os.getloadavg()[0]:.1f} at the end.", "",
             f"* Building the task-A base (first use only): {base_t[0]:.0f} s of CPU, {base_t[1]:.0f} s wall.",
             f"* The demo over seeds {', '.join(map(str, result.seeds))} (training, comparisons, report): "
             f"{demo_t[0]:.0f} s of CPU, {demo_t[1]:.0f} s wall.", "", "Printed summary:", "", "```",
             *result.lines(), "```", "", "Per seed:", "",
             "| run | seed | eval token acc | exact match | " + " | ".join(f"r({m[0].upper()})" for m in PAPER_MODULES) + " |",
             "|---|---|---|---|" + "---|" * len(PAPER_MODULES)]
    for m in result.methods:
        for i, seed in enumerate(result.seeds):
            e = m.evals[i]
            rs = " | ".join(f"{m.pearson_r[mod][i]:+.2f}" for mod in PAPER_MODULES)
            lines.append(f"| {m.label} | {seed} | {e['eval_accuracy']:.3f} | {e['eval_exact_match']:.3f} | {rs} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=DemoConfig.seeds)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dora-diag-bench-demo-") as tmp:
        os.environ["DORA_DIAG_CACHE"] = str(Path(tmp) / "cache")
        torch.set_num_threads(1)   # as the demo builds and trains
        _, *base_t = timed(builtin_base)
        result, *demo_t = timed(lambda: run_demo(DemoConfig(out=str(Path(tmp) / "demo.html"), seeds=args.seeds)))
    text = render(result, tuple(base_t), tuple(demo_t))
    print(text)
    write_atomic(REPORT, text)


if __name__ == "__main__":
    main()
