"""Step time and peak memory of our LoRA/DoRA layers against PEFT 0.21's, on CPU.

Model: a MiniLM-sized BERT encoder (hidden 384, intermediate 1536, 6 layers, 12 heads; random
init, small vocabulary), adapters on every attention and MLP Linear (query, key, value, dense),
alpha = 2r, batch 4 x 128 tokens, one step = forward + backward + AdamW step, 2 torch threads.
At each r the four runs are timed in one process, interleaved step by step (a shared machine's
load then hits all alike); the table gives the fastest step (and the median). Peak memory is
the max RSS of a separate fresh process per run that builds the model and takes 3 steps.

    python benchmarks/bench_layers.py               # full table into reports/benchmarks.md
    python benchmarks/bench_layers.py --quick       # smoke run, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_section import write_section  # noqa: E402
TARGETS = ("query", "key", "value", "dense")
RANKS = (8, 16, 64)
RUNS = (("ours", "lora"), ("ours", "dora"), ("peft", "lora"), ("peft", "dora"))


def _peak_rss_mib() -> float:
    """VmHWM of this process (ru_maxrss would carry the parent's peak over fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _model(impl: str, method: str, rank: int):
    import transformers
    cfg = transformers.BertConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=12,
                                  vocab_size=2048, max_position_embeddings=128)
    model = transformers.BertModel(cfg, add_pooling_layer=False)
    if impl == "peft":
        import peft
        return peft.get_peft_model(model, peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(TARGETS),
                                                          use_dora=method == "dora"))
    from dora_diag.train import AdapterConfig, apply_adapters
    apply_adapters(model, AdapterConfig(method=method, rank=rank, alpha=2 * rank, targets=TARGETS))
    return model


def _step(model, opt, ids) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one fwd + bwd + AdamW step."""
    t0, c0 = time.perf_counter(), time.process_time()
    model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, time.process_time() - c0


def _setup(impl: str, method: str, rank: int):
    torch.manual_seed(0)
    model = _model(impl, method, rank).train()
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def memory_worker(impl: str, method: str, rank: int, batch: int, seq: int) -> dict:
    """Peak RSS of a fresh process that builds the model and runs 3 steps."""
    torch.set_num_threads(2)
    model, opt = _setup(impl, method, rank)
    ids = torch.randint(0, 2048, (batch, seq))
    for _ in range(3):
        _step(model, opt, ids)
    return {"impl": impl, "method": method, "rank": rank, "peak_rss_mib": _peak_rss_mib()}


def timing(rank: int, steps: int, batch: int, seq: int) -> dict:
    """Step times of the four runs at one rank, interleaved step by step so machine load hits all alike."""
    torch.set_num_threads(2)
    runs = {run: _setup(*run, rank) for run in RUNS}
    ids = torch.randint(0, 2048, (batch, seq))
    times: dict = {run: [] for run in RUNS}
    for step in range(2 + steps):
        for run, (model, opt) in runs.items():
            t = _step(model, opt, ids)
            if step >= 2:
                times[run].append(t)
    return {run: {"wall": statistics.median(w for w, _ in t), "cpu": statistics.median(c for _, c in t)}
            for run, t in times.items()}


def norm_microbench(repeats: int = 50) -> list[dict]:
    """Cost of one DoRA row-norm evaluation (no graph): from the factors, through one fused addmm, and
    PEFT's way (B·A, then W0 + s·BA, then the norm). Fastest of ``repeats``, interleaved."""
    from dora_diag.adapters.norms import dense_row_norm, factored_row_norm, fused_dense_row_norm, squared_row_norms
    torch.set_num_threads(2)
    rows = []
    for out, inp in ((384, 384), (1536, 384), (384, 1536), (4096, 4096), (11008, 4096)):
        for rank in RANKS:
            w0, a, b = torch.randn(out, inp), torch.randn(rank, inp), torch.randn(out, rank)
            w0_sq = squared_row_norms(w0)
            fns = {"factored": lambda: factored_row_norm(w0, w0_sq, a, b, 2.0),
                   "fused": lambda: fused_dense_row_norm(w0, a, b, 2.0),
                   "peft": lambda: dense_row_norm(w0 + 2.0 * (b @ a))}
            times: dict = {name: [] for name in fns}
            for _ in range(max(3, repeats * 384 * 1536 // (out * inp))):
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
            rows.append({"shape": f"{out}x{inp}", "rank": rank, **{k: min(v) * 1e6 for k, v in times.items()}})
    return rows


def _table(results: list[dict], norms: list[dict], command: str, batch: int, seq: int, steps: int, load: str) -> str:
    by = {(r["impl"], r["method"], r["rank"]): r for r in results}
    lines = ["## DoRA layers (`benchmarks/bench_layers.py`)", "",
             f"MiniLM-sized BERT encoder (hidden 384, intermediate 1536, 6 layers), adapters on query/key/value/"
             f"all dense layers, alpha = 2r, batch {batch} x {seq} tokens, fwd + bwd + AdamW step, CPU, "
             f"2 torch threads. Step time = median over {steps} steps of the process CPU time (wall-clock median in "
             f"parentheses; CPU time is what stays comparable when other jobs load the machine), the four runs "
             f"interleaved step by step in one process. Ratios are CPU-time ratios (wall-clock ratios in "
             f"parentheses). Peak = VmHWM of a fresh process per run (model build + 3 steps).", "",
             f"Command: `{command}`; {load}.", "",
             "| r | ours LoRA s | ours DoRA s | PEFT LoRA s | PEFT DoRA s | ours DoRA / ours LoRA (target <= 1.15) "
             "| ours DoRA / PEFT DoRA (target <= 0.80) | peak RSS MiB ours DoRA / PEFT DoRA |",
             "|---|---|---|---|---|---|---|---|"]
    for rank in sorted({r["rank"] for r in results}):
        ol, od, pl, pd = (by[(i, m, rank)] for i, m in RUNS)
        r1, r2 = od["cpu"] / ol["cpu"], od["cpu"] / pd["cpu"]
        w1, w2 = od["wall"] / ol["wall"], od["wall"] / pd["wall"]
        cells = " | ".join(f"{r['cpu']:.3f} ({r['wall']:.3f})" for r in (ol, od, pl, pd))
        lines.append(f"| {rank} | {cells} "
                     f"| {r1:.3f} ({w1:.3f}) {'met' if r1 <= 1.15 else 'MISSED'} "
                     f"| {r2:.3f} ({w2:.3f}) {'met' if r2 <= 0.80 else 'MISSED'} "
                     f"| {od['peak_rss_mib']:.0f} / {pd['peak_rss_mib']:.0f} "
                     f"{'met' if od['peak_rss_mib'] <= pd['peak_rss_mib'] else 'MISSED'} |")
    lines += ["", "One detached row-norm evaluation of W0 + s·BA (µs, fastest of several, interleaved): from the "
              "factors, through one fused addmm (our choice below 2048x2048 entries), and PEFT's way:", "",
              "| W0 shape | r | factored µs | fused dense µs | PEFT-style dense µs |", "|---|---|---|---|---|"]
    lines += [f"| {n['shape']} | {n['rank']} | {n['factored']:.0f} | {n['fused']:.0f} | {n['peft']:.0f} |" for n in norms]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="r=8 only, 2 steps, tiny batch; print, write nothing")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--memory-worker", nargs=3, metavar=("IMPL", "METHOD", "RANK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    ranks, steps, batch, seq = ((8,), 2, 2, 32) if args.quick else (RANKS, args.steps, args.batch, args.seq)
    if args.memory_worker:
        impl, method, rank = args.memory_worker
        print(json.dumps(memory_worker(impl, method, int(rank), batch, seq)))
        return
    load_before = os.getloadavg()[0]
    results = []
    for rank in ranks:
        times = timing(rank, steps, batch, seq)
        for impl, method in RUNS:
            out = subprocess.run([sys.executable, __file__, "--memory-worker", impl, method, str(rank),
                                  "--batch", str(batch), "--seq", str(seq)],
                                 check=True, capture_output=True, text=True).stdout
            results.append({**json.loads(out.strip().splitlines()[-1]), **times[(impl, method)]})
            print(json.dumps(results[-1]), flush=True)
    norms = norm_microbench(5 if args.quick else 50)
    load = f"1-minute load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} CPUs)"
    section = _table(results, norms, "python " + " ".join(["benchmarks/bench_layers.py", *sys.argv[1:]]),
                     batch, seq, steps, load)
    print(section)
    if not args.quick:
        write_section("bench_layers", section)


if __name__ == "__main__":
    main()
