"""Start-up: wall time of `dora-diag compare` on a tiny pair, and what the imports cost.

    python benchmarks/bench_startup.py              # 5 interleaved rounds, medians
    python benchmarks/bench_startup.py --rounds 9 --no-write
    python benchmarks/bench_startup.py --baseline ../old/src   # also another tree's compare, interleaved

Every measurement is a fresh interpreter (`sys.executable`), run once per round, the rounds
interleaved so that a load spike hits all of them alike; the report gives medians and the load
average before and after (other processes on the machine distort start-up more than streaming).
Writes its section of reports/benchmarks.md (skip with --no-write).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_section import command_line, publish  # noqa: E402

TARGET_S = 1.0   # issue 18: a tiny compare within 1 s wall
IMPORTS = ["numpy", "click", "pandas", "scipy.special", "plotly.graph_objects", "torch", "dora_diag.cli"]
# Which of these a compare leaves loaded (printed last by the probe below).
HEAVY = ("torch", "pandas", "scipy", "plotly")
PROBE = ("import json, sys\nfrom dora_diag.cli import main\nmain(sys.argv[1:])\n"
         f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")


def tiny_pair(directory: Path) -> tuple[Path, Path]:
    """Base and fine-tuned files of 4 small fp32 LLaMA-named tensors."""
    rng = np.random.default_rng(0)
    base = {f"model.layers.{i}.self_attn.q_proj.weight": rng.standard_normal((64, 64), dtype=np.float32)
            for i in range(4)}
    ft = {k: v + np.float32(1e-2) * rng.standard_normal(v.shape, dtype=np.float32) for k, v in base.items()}
    paths = directory / "base.safetensors", directory / "ft.safetensors"
    for path, tensors in zip(paths, (base, ft)):
        save_file(tensors, str(path))
    return paths


def commands(base: Path, ft: Path, csv: Path, baseline: str | None) -> dict[str, tuple[list[str], dict | None]]:
    """name -> (command, environment: None for this one's)."""
    py = [sys.executable]
    cmds = {"python -c pass": py + ["-c", "pass"]}
    cmds |= {f"import {m}": py + ["-c", f"import {m}"] for m in IMPORTS}
    cmds |= {
        "dora-diag --help": py + ["-m", "dora_diag", "--help"],
        "dora-diag compare (summary)": py + ["-m", "dora_diag", "compare", str(base), str(ft)],
        "dora-diag compare -q --csv": py + ["-m", "dora_diag", "compare", str(base), str(ft), "-q", "--csv", str(csv)],
    }
    runs = {name: (cmd, None) for name, cmd in cmds.items()}
    if baseline:
        env = {**os.environ, "PYTHONPATH": baseline}
        runs |= {f"{name} [baseline]": (cmds[name], env) for name in ("dora-diag compare (summary)",
                                                                       "dora-diag compare -q --csv")}
    return runs


def wall(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def loaded(base: Path, ft: Path, *extra: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, "compare", str(base), str(ft), *extra], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(rounds: int, baseline: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        base, ft = tiny_pair(Path(tmp))
        cmds = commands(base, ft, Path(tmp) / "t.csv", baseline)
        load_before = os.getloadavg()
        for cmd, env in cmds.values():   # warm the page cache and .pyc files: start-up, not disk, is measured
            wall(cmd, env)
        walls: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(rounds):
            for name, (cmd, env) in cmds.items():
                walls[name].append(wall(cmd, env))
        return {"walls": walls, "load": (load_before, os.getloadavg()), "baseline": baseline,
                "loaded": {"summary": loaded(base, ft), "csv": loaded(base, ft, "-q", "--csv", str(Path(tmp) / "p.csv"))}}


def render(r: dict, command: str) -> str:
    med = {name: statistics.median(w) for name, w in r["walls"].items()}
    floor = med["python -c pass"]
    (b1, b5, b15), (a1, a5, a15) = r["load"]
    lines = [
        "## Start-up (`benchmarks/bench_startup.py`)", "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"load average {b1:.2f} / {b5:.2f} / {b15:.2f} before, {a1:.2f} / {a5:.2f} / {a15:.2f} after (1/5/15 min). "
        f"Medians of {len(r['walls']['python -c pass'])} interleaved rounds, each a fresh interpreter, warm cache.", "",
        "| measurement | median wall s | beyond `python -c pass` s | all runs s |", "|---|---|---|---|",
    ]
    if r["baseline"]:
        lines.insert(-2, f"[baseline]: the same command with `PYTHONPATH={r['baseline']}`.\n")
    for name, walls in r["walls"].items():
        lines.append(f"| {name} | {med[name]:.3f} | {med[name] - floor:.3f} | "
                     f"{', '.join(f'{w:.2f}' for w in walls)} |")
    compare = med["dora-diag compare (summary)"]
    lines += [
        "", f"Loaded by a CPU compare (of {', '.join(HEAVY)}): with its summary "
        f"{', '.join(r['loaded']['summary']) or 'none'}; with `-q --csv` {', '.join(r['loaded']['csv']) or 'none'}.",
        "", "| target | measured | |", "|---|---|---|",
        f"| tiny-pair `compare` <= {TARGET_S:.1f} s wall | {compare:.2f} s | "
        f"{'met' if compare <= TARGET_S else 'MISSED'} |",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians reported; at least 3)")
    ap.add_argument("--baseline", metavar="SRC", help="also time compare from this source tree (its PYTHONPATH)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    r = run(max(3, args.rounds), args.baseline)
    publish("bench_startup", render(r, command_line()), not args.no_write)


if __name__ == "__main__":
    main()
