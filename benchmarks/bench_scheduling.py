"""Scheduling of the CPU stream: block size, tensors streamed at once, read-ahead window.

    python benchmarks/bench_scheduling.py               # the 2 GB + 2 GB pair of bench_compare
    python benchmarks/bench_scheduling.py --rounds 5 --no-write

One knob at a time is moved away from the defaults (``--block-mb``, ``runtime.cpu_streams``,
``io.safetensors_file.STREAM_READAHEAD``); every setting runs warm and cold (page cache dropped
with posix_fadvise) in each round, the settings in a new order per round, and ``cat`` of the same
files warm and cold in the same rounds. Runs are in one process through ``dora_diag.compare``, so
the times are streaming times (open, plan, stream, tabulate) without interpreter start-up.
Writes its section of reports/benchmarks.md (skip with --no-write).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synth  # noqa: E402
from bench_compare import GB, bytes_of, evict, read_through  # noqa: E402
from report_section import command_line, publish  # noqa: E402

import dora_diag  # noqa: E402
from dora_diag.analysis.executors import job as job_module, local as local_module  # noqa: E402
from dora_diag.io import safetensors_file, sources as sources_module  # noqa: E402
from dora_diag.options import DEFAULT_BLOCK_BYTES  # noqa: E402
from dora_diag.runtime import cpu_streams  # noqa: E402

MB = 1 << 20
DEFAULT = {"block_mb": DEFAULT_BLOCK_BYTES / MB, "streams": cpu_streams("cpu"),
           "readahead_mb": safetensors_file.STREAM_READAHEAD / MB}
VARIANTS = {"block_mb": (0.5, 8, 32), "streams": (1, 3, 4), "readahead_mb": (0, 16, 64)}


def settings() -> list[dict]:
    """The defaults, then each knob moved alone."""
    out = [dict(DEFAULT)]
    for knob, values in VARIANTS.items():
        out += [{**DEFAULT, knob: v} for v in values if v != DEFAULT[knob]]
    return out


def label(s: dict) -> str:
    moved = [k for k in s if s[k] != DEFAULT[k]]
    return "defaults" if not moved else ", ".join(f"{k} = {s[k]:g}" for k in moved)


def stream_once(base: Path, ft: Path, s: dict) -> float:
    """Seconds of one in-process compare with setting ``s``."""
    for module in (job_module, sources_module):   # the readers the base and the checkpoints stream through
        module.STREAM_READAHEAD = int(s["readahead_mb"] * MB)
    local_module.cpu_streams = lambda device, n=s["streams"]: n
    start = time.perf_counter()
    dora_diag.compare(base, ft, device="cpu", block_bytes=int(s["block_mb"] * MB))
    return time.perf_counter() - start


def cat_once(files: list[Path]) -> float:
    start = time.perf_counter()
    read_through(files)
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict:
    work = Path(args.workdir)
    base, ft = work / "base", work / "run" / "checkpoint-1"
    for d, seed in ((base, None), (ft, 1)):
        synth.ensure(d, int(args.size_gb * GB), seed)
    files = synth.files(base) + synth.files(ft)
    all_settings = settings()
    times: dict[tuple[str, str], list[float]] = {}
    load_before = os.getloadavg()[0]
    rng = random.Random(0)
    cat_once(files)
    stream_once(base, ft, DEFAULT)   # warm-up: imports, allocator
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
        order = list(range(len(all_settings)))
        rng.shuffle(order)
        for i in order:
            s = all_settings[i]
            cat_once(files)
            times.setdefault((label(s), "warm"), []).append(stream_once(base, ft, s))
            evict(files)
            times.setdefault((label(s), "cold"), []).append(stream_once(base, ft, s))
        times.setdefault(("cat", "warm"), []).append(cat_once(files))
        evict(files)
        times.setdefault(("cat", "cold"), []).append(cat_once(files))
    return {"times": times, "settings": [label(s) for s in all_settings], "bytes": bytes_of(files),
            "load": (load_before, os.getloadavg()[0]), "rounds": args.rounds}


def render(r: dict, command: str) -> str:
    med = {k: statistics.median(v) for k, v in r["times"].items()}
    gbps = lambda s: r["bytes"] / s / GB  # noqa: E731
    cat_w, cat_c = med[("cat", "warm")], med[("cat", "cold")]
    lines = [
        "## Stream scheduling (`benchmarks/bench_scheduling.py`)", "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; pair = "
        f"{r['bytes'] / GB:.2f} GB of bf16 shards; {r['rounds']} interleaved rounds, medians; in-process "
        f"`dora_diag.compare` (no start-up); 1-minute load average {r['load'][0]:.1f} at the start, "
        f"{r['load'][1]:.1f} at the end.", "",
        f"`cat` of the same files: warm {cat_w:.2f} s ({gbps(cat_w):.2f} GB/s), cold {cat_c:.2f} s "
        f"({gbps(cat_c):.2f} GB/s).", "",
        "| setting | warm s | warm GB/s | cold s | cold / `cat` cold |", "|---|---|---|---|---|",
    ]
    for name in r["settings"]:
        w, c = med[(name, "warm")], med[(name, "cold")]
        lines.append(f"| {name} | {w:.2f} | {gbps(w):.2f} | {c:.2f} | {c / cat_c:.2f}x |")
    d_w, d_c = med[("defaults", "warm")], med[("defaults", "cold")]
    best_w = min(r["settings"], key=lambda n: med[(n, "warm")])
    best_c = min(r["settings"], key=lambda n: med[(n, "cold")])
    lines += ["", f"Defaults: {gbps(d_w):.2f} GB/s warm, cold {d_c / cat_c:.2f}x `cat`. Fastest warm: {best_w} "
              f"({gbps(med[(best_w, 'warm')]):.2f} GB/s); fastest cold: {best_c} "
              f"({med[(best_c, 'cold')] / cat_c:.2f}x `cat`)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=2.0, help="size of each checkpoint")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/dora-diag-bench")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    publish("bench_scheduling", render(run(args), command_line()), not args.no_write)


if __name__ == "__main__":
    main()
