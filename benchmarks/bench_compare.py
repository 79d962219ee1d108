"""Streaming compare at disk speed in bounded memory: wall time, memory and bytes read.

    python benchmarks/bench_compare.py                 # ~2 GB per checkpoint, a run of 4, CPU
    python benchmarks/bench_compare.py --big           # also a 2 x 14 GB pair (larger than RAM)
    python benchmarks/bench_compare.py --device cuda   # on a GPU machine

Generates synthetic LLaMA-shaped bf16 shards under --workdir (reused when present), then
measures, in --repeat interleaved rounds (medians): `dora-diag compare` warm and cold, `cat` of
the same files warm and cold, a naive full-load fp32 reference (on this pair and on a 2 x 0.8 GB
one), with --big the larger-than-RAM pair cold against `cat`; once: a base + 4 checkpoint run
against 4 pairwise runs, and an adapter check.
Writes its section of reports/benchmarks.md (skip with --no-write).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synth  # noqa: E402
from report_section import command_line, publish  # noqa: E402

GB = 1e9


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache (POSIX_FADV_DONTNEED needs no privileges)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cached_bytes(paths: list[Path]) -> int:
    """Bytes of ``paths`` in the page cache (util-linux ``fincore``)."""
    out = subprocess.run(["fincore", "-b", "-n", "-o", "RES", *map(str, paths)], capture_output=True, text=True,
                         check=True).stdout
    return sum(int(x) for x in out.split())


def measure(cmd: list[str]) -> dict:
    """Run ``cmd``; wall time, peak RSS (VmHWM) and peak RssAnon sampled every 5 ms."""
    start = time.perf_counter()
    # Output goes to files, not pipes: an unread pipe would stall `cat` once it fills.
    out_f, err_f = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL if cmd[0] == "cat" else out_f, stderr=err_f)
    peak_anon = peak_rss = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            break
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        peak_anon = max(peak_anon, int(fields.get("RssAnon", "0 kB").split()[0]))
        peak_rss = max(peak_rss, int(fields.get("VmHWM", "0 kB").split()[0]))
        time.sleep(0.005)
    proc.wait()
    wall = time.perf_counter() - start
    out_f.seek(0)
    err_f.seek(0)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err_f.read().decode()[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": peak_rss / 1024, "peak_anon_mb": peak_anon / 1024,
            "stdout": out_f.read().decode()}


def measure_compare(cmd: list[str], json_out: Path) -> dict:
    """``measure`` of a `dora-diag compare ... --json json_out`, with the JSON's streaming time
    (``elapsed_s``), bytes read and executor block."""
    m = measure(cmd)
    doc = json.loads(json_out.read_text())
    return {**m, "elapsed_s": doc["elapsed_s"], "bytes_read": doc["bytes_read"], "executor": doc["executor"]}


def median_of(results: list[dict]) -> dict:
    """The run with the median wall time (shared machines are noisy), with every run ("all")."""
    results = sorted(results, key=lambda m: m["wall_s"])
    return {**results[len(results) // 2], "walls": [round(m["wall_s"], 2) for m in results], "all": results}


def interleaved(rounds: int, **once) -> dict[str, dict]:
    """``median_of`` each measurement, taken in turn once per round so that a load spike or a
    drifting page cache hits all of them alike."""
    runs: dict[str, list[dict]] = {name: [] for name in once}
    for _ in range(rounds):
        for name, fn in once.items():
            runs[name].append(fn())
    return {name: median_of(results) for name, results in runs.items()}


def compare_cmd(base: Path, *ft: Path | str, device: str, json_out: Path) -> list[str]:
    return [sys.executable, "-m", "dora_diag", "compare", str(base), *map(str, ft), "-q", "--device", device,
            "--json", str(json_out)]


NAIVE = r"""
import sys, time, torch
from safetensors.torch import load_file
started = time.perf_counter()
torch.set_num_threads(2)
def load(d):
    import glob
    out = {}
    for f in sorted(glob.glob(d + "/*.safetensors")):
        out.update(load_file(f))
    return out
a, c = load(sys.argv[1]), load(sys.argv[2])
res = {}
for k, w0 in a.items():
    if w0.dim() < 2:
        continue
    w0, w1 = w0.float(), c[k].float()
    m0, m1 = w0.norm(dim=1), w1.norm(dim=1)
    cos = (w0 * w1).sum(1) / (m0 * m1)
    res[k] = ((m1 - m0).abs().mean().item(), (1 - cos).mean().item())
print(len(res), time.perf_counter() - started)
"""


def bytes_of(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def cat(paths: list[Path]) -> list[str]:
    return ["cat", *map(str, paths)]


def read_through(paths: list[Path]) -> None:
    """Read ``paths`` once, into the page cache."""
    subprocess.run(cat(paths), stdout=subprocess.DEVNULL, check=True)


def cold(paths: list[Path], once):
    """``once`` run with ``paths`` evicted from the page cache first."""
    def run_cold() -> dict:
        evict(paths)
        return once()
    return run_cold


def naive_once(base: Path, ft: Path) -> dict:
    m = measure([sys.executable, "-c", NAIVE, str(base), str(ft)])
    return {**m, "elapsed_s": float(m["stdout"].split()[1])}


def small_pair(work: Path, n: int, device: str, js: Path) -> dict:
    """Warm compare against the naive loop on a 2 x 0.8 GB pair, where start-up weighs most."""
    base, ft = work / "small-base", work / "small-ft"
    for d, seed in ((base, None), (ft, 1)):
        synth.ensure(d, int(0.8 * GB), seed)
    read_through(synth.files(base) + synth.files(ft))
    return {"bytes": bytes_of(synth.files(base) + synth.files(ft)),
            **interleaved(n, compare=lambda: measure(compare_cmd(base, ft, device=device, json_out=js)),
                          naive=lambda: naive_once(base, ft))}


def run(args: argparse.Namespace) -> dict:
    work = Path(args.workdir)
    size = int(args.size_gb * GB)
    base, run_dir = work / "base", work / "run"
    ckpts = [run_dir / f"checkpoint-{i}" for i in range(1, args.checkpoints + 1)]
    for d, seed in [(base, None)] + [(c, i) for i, c in enumerate(ckpts, 1)]:
        synth.ensure(d, size, seed)
    last = ckpts[-1]
    pair_files = synth.files(base) + synth.files(last)
    pair_bytes = bytes_of(pair_files)
    js = work / "out.json"
    r: dict = {"pair_bytes": pair_bytes, "device": args.device, "checkpoints": len(ckpts)}

    def compare_once(*targets: Path | str) -> dict:
        return measure_compare(compare_cmd(*targets, device=args.device, json_out=js), js)

    n = args.repeat
    r["startup"] = interleaved(n, s=lambda: measure([sys.executable, "-c", "import dora_diag.cli.main"]))["s"]
    read_through(pair_files)
    r |= interleaved(n, cat_warm=lambda: measure(cat(pair_files)), compare_warm=lambda: compare_once(base, last),
                     naive_warm=lambda: naive_once(base, last))
    r["small"] = small_pair(work, n, args.device, js)
    r |= interleaved(n, cat_cold=cold(pair_files, lambda: measure(cat(pair_files))),
                     compare_cold=cold(pair_files, lambda: compare_once(base, last)))
    r["cold_note"] = "page cache dropped per file with posix_fadvise(POSIX_FADV_DONTNEED)"

    r["multi"] = compare_once(base, f"run={run_dir}")
    r["pairwise_bytes_read"] = sum(compare_once(base, c)["bytes_read"] for c in ckpts)
    adapter = work / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        synth.write_adapter(adapter, base, rank=16, targets=("q_proj", "v_proj"))
    r["adapter"] = {**compare_once(base, adapter),
                    "needed": synth.targeted_bytes(base, ("q_proj", "v_proj")) + bytes_of([adapter / "adapter_model.safetensors"])}
    if args.big:
        big_base, big_ft = work / "big-base", work / "big-ft"
        for d, seed in ((big_base, None), (big_ft, 1)):
            synth.ensure(d, int(14 * GB), seed)
        big_files = synth.files(big_base) + synth.files(big_ft)

        bystander = synth.files(work / "small-base")   # another job's file, read once before the stream

        def big_once() -> dict:
            evict(bystander)
            read_through(bystander)
            before = cached_bytes(bystander)
            return {**compare_once(big_base, big_ft), "bytes": bytes_of(big_files),
                    "bystander": (before, cached_bytes(bystander))}

        r |= interleaved(n, big=cold(big_files, big_once), big_cat=cold(big_files, lambda: measure(cat(big_files))))
    return r


def render(r: dict, command: str) -> str:
    gbps = lambda m, n=r["pair_bytes"]: n / m["wall_s"] / GB  # noqa: E731
    w, c = r["compare_warm"], r["compare_cold"]
    lines = [
        "## Streaming compare (`benchmarks/bench_compare.py`)", "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"device {r['device']}; pair = base + fine-tuned, {r['pair_bytes'] / GB:.2f} GB of bf16 shards.", "",
        "| measurement | wall s | GB/s | peak RSS MB | peak RssAnon MB |", "|---|---|---|---|---|",
    ]
    for key, label in [("compare_warm", "dora-diag compare, warm cache"), ("cat_warm", "cat, warm cache"),
                       ("naive_warm", "naive: load both fully, fp32 loop"), ("compare_cold", "dora-diag compare, cold"),
                       ("cat_cold", "cat, cold")]:
        m = r[key]
        lines.append(f"| {label} | {m['wall_s']:.2f} | {gbps(m):.2f} | {m['peak_rss_mb']:.0f} | {m['peak_anon_mb']:.0f} |")
    naive = r["naive_warm"]
    speedup, cold_ratio = r["naive_warm"]["wall_s"] / w["wall_s"], c["elapsed_s"] / r["cat_cold"]["wall_s"]
    sm = r["small"]
    small_speedup = sm["naive"]["wall_s"] / sm["compare"]["wall_s"]
    ok = lambda b: "met" if b else "MISSED"  # noqa: E731
    lines += [
        "", f"Each row is the median of {len(w['walls'])} runs (all wall times: compare warm {w['walls']}, "
        f"cold {c['walls']}, naive {r['naive_warm']['walls']}). Start-up (`import dora_diag.cli.main`: "
        f"Python, click and the CLI; `benchmarks/bench_startup.py` times a whole tiny compare) takes "
        f"{r['startup']['wall_s']:.2f} s of every run; the streaming rate below is "
        f"the bytes over the JSON's `elapsed_s` (open, plan, stream, tabulate), without it.",
        "", "| target | measured | |", "|---|---|---|",
        f"| warm: >= 4 GB/s (streaming rate) | {r['pair_bytes'] / w['elapsed_s'] / GB:.2f} GB/s "
        f"({gbps(w):.2f} GB/s wall clock with start-up) | {ok(r['pair_bytes'] / w['elapsed_s'] / GB >= 4)} |",
        f"| warm, end to end: >= 2.5x the naive loop ({r['pair_bytes'] / GB:.1f} GB pair) | {speedup:.2f}x wall "
        f"clock ({naive['elapsed_s'] / w['elapsed_s']:.2f}x after start-up: {naive['elapsed_s']:.2f} s vs "
        f"{w['elapsed_s']:.2f} s) | {ok(speedup >= 2.5)} |",
        f"| warm, end to end: >= 2.5x the naive loop ({sm['bytes'] / GB:.1f} GB pair) | {small_speedup:.2f}x wall "
        f"clock ({sm['compare']['wall_s']:.2f} s vs {sm['naive']['wall_s']:.2f} s) | {ok(small_speedup >= 2.5)} |",
        f"| cold: <= 1.15x `cat` (streaming time) | {cold_ratio:.2f}x ({c['wall_s'] / r['cat_cold']['wall_s']:.2f}x "
        f"wall clock with start-up) | {ok(cold_ratio <= 1.15)} |",
        f"| peak RssAnon <= 512 MB | {max(w['peak_anon_mb'], c['peak_anon_mb']):.0f} MB | "
        f"{ok(max(w['peak_anon_mb'], c['peak_anon_mb']) <= 512)} |",
        f"| base read once for N checkpoints | one run {r['multi']['bytes_read'] / GB:.2f} GB vs "
        f"{r['checkpoints']} pairwise runs {r['pairwise_bytes_read'] / GB:.2f} GB | "
        f"{ok(r['multi']['bytes_read'] < r['pairwise_bytes_read'])} |",
    ]
    a = r["adapter"]
    lines.append(f"| adapter check: bytes read <= targeted base tensors + adapter + 5% | "
                 f"{a['bytes_read'] / 1e6:.1f} MB read, {a['needed'] / 1e6:.1f} MB needed, {a['wall_s']:.1f} s | "
                 f"{ok(a['bytes_read'] <= 1.05 * a['needed'])} |")
    if "big" in r:
        b = r["big"]
        lines.append(f"| larger than RAM ({b['bytes'] / GB:.0f} GB pair, cold): RssAnon <= 512 MB | "
                     f"{b['peak_anon_mb']:.0f} MB; {b['bytes'] / b['wall_s'] / GB:.2f} GB/s wall clock, "
                     f"{b['elapsed_s'] / r['big_cat']['wall_s']:.2f}x `cat` ({r['big_cat']['wall_s']:.0f} s; compare walls "
                     f"{b['walls']}, cat {r['big_cat']['walls']}) | "
                     f"{ok(b['peak_anon_mb'] <= 512)} |")
        kept = [f"{after / GB:.2f} of {before / GB:.2f}" for before, after in
                (m["bystander"] for m in b["all"])]
        lines.append(f"| larger than RAM: a file read once before the stream stays in the page cache | "
                     f"GB still cached after each run: {', '.join(kept)} | "
                     f"{ok(all(a >= 0.9 * bf for bf, a in (m['bystander'] for m in b['all'])))} |")
        big_ratio = b["elapsed_s"] / r["big_cat"]["wall_s"]
        lines.append(f"| larger than RAM, cold: <= 1.15x `cat` (streaming time) | {big_ratio:.2f}x | "
                     f"{ok(big_ratio <= 1.15)} |")
    lines += ["", f"Cold cache: {r['cold_note']}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=2.0, help="size of each checkpoint")
    ap.add_argument("--checkpoints", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="runs per warm/cold measurement (median reported)")
    ap.add_argument("--workdir", default="/tmp/dora-diag-bench")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--big", action="store_true", help="also a 2 x 14 GB pair")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    r = run(args)
    publish("bench_compare" if args.device == "cpu" else "bench_compare_gpu", render(r, command_line()),
            not args.no_write)


if __name__ == "__main__":
    main()
