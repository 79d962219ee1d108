"""The matched trial behind ``dora-diag check --trial``: does DoRA beat LoRA *here*?

From the user's LoRA run we take its settings (rank, alpha, rsLoRA, targets, learning rate,
batch size, warmup share, NF4 quantization, data) and train short LoRA and DoRA runs from the
same base, for seeds 0..K-1. Within a seed the two runs differ only in the method: the same initial seed, the same
batch order (the trainer's order is a function of the seed only) and, for JSONL data, the same
held-out split. The answer is the paired difference DoRA - LoRA of the final eval loss (and
accuracy), its mean and sample standard deviation over the seeds.

Settings come from ``train_config.json`` (runs written by ``dora-diag train``) or from a PEFT
``adapter_config.json`` (r, lora_alpha, target_modules, lora_dropout, use_rslora; the steps from
``trainer_state.json`` if there is one) plus TrainConfig's defaults for everything it does not
record; ``settings["from"]`` says where each value came from.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import InputError
from ..io.checkpoint import read_json
from ..io.peft_config import read_adapter_config
from ..io.runs import CHECKPOINT_DIR
from ..options import CHECK_TRIAL_SEEDS, TRIAL_STEPS
from .config import WARMUP_FRACTION, TrainConfig
from .trainer import TrainProgress, final_eval, read_metrics, train

TRIAL_METHODS = ("lora", "dora")
# The run settings the trial copies; everything else is TrainConfig's default.
COPIED = ("rank", "alpha", "use_rslora", "targets", "dropout", "lr", "batch_size", "weight_decay",
          "max_grad_norm", "quantize", "max_length", "eval_fraction", "data")
_DEFAULTS = TrainConfig(out="", method="lora").resolved()


@dataclass
class RunSettings:
    """The LoRA run's settings the trial copies, with the source of each value."""

    values: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)

    def set(self, name: str, value, source: str) -> None:
        self.values[name], self.sources[name] = value, source


def run_trial(base: str | Path, run: str | Path, *, steps: int | None = None, seeds: int = CHECK_TRIAL_SEEDS,
              data: str | Path | None = None, progress=None, device: str = "auto") -> dict:
    """Train matched LoRA and DoRA runs from ``base`` with ``run``'s settings; JSON-ready result
    (see verdict-api: settings, runs, difference, summary).

    ``steps`` (default: the run's steps, at most TRIAL_STEPS) is the step budget of each of the
    2 * ``seeds`` runs; ``progress(method, seed, steps)`` gives each run its TrainProgress (a bar).
    Temporary run directories are removed on every exit, Ctrl-C included.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise InputError(f"the trial needs at least 2 seeds to show a spread, got {seeds!r}")
    settings = read_run_settings(Path(run), Path(base), data)
    trial_steps = _trial_steps(settings, steps)
    configs = matched_configs(settings, Path(base), trial_steps, seeds, device)
    progress = progress or (lambda method, seed, n: TrainProgress())
    workdir = Path(tempfile.mkdtemp(prefix="dora-diag-trial-"))
    try:
        runs = [_train_one(cfg, workdir, progress(cfg.method, cfg.seed, cfg.steps)) for cfg in configs]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    settings_out = {"base": str(base), "run": str(run), "steps": trial_steps, "seeds": list(range(seeds)),
                    "warmup_steps": configs[0].warmup_steps, **settings.values,
                    "from": dict(settings.sources)}
    difference = paired_difference(runs)
    return {"settings": settings_out, "runs": runs, "difference": difference,
            "summary": summary(difference, trial_steps)}


def read_run_settings(run: Path, base: Path, data: str | Path | None) -> RunSettings:
    """The settings of a LoRA run dir (train_config.json) or PEFT adapter (adapter_config.json);
    InputError for anything that is not a LoRA run or lacks what the trial needs."""
    if not run.is_dir():
        raise InputError(f"{run}: not a directory (give the LoRA run directory or a PEFT adapter directory)")
    if not base.is_dir():
        raise InputError(f"{base}: the trial trains from the base, which must be a model directory")
    if (run / "train_config.json").is_file():
        settings = _from_train_config(run / "train_config.json")
    else:
        settings = _from_adapter_config(run)
    for name in COPIED:
        if name not in settings.values:
            settings.set(name, getattr(_DEFAULTS, name), "default")
    if data is not None:
        settings.set("data", str(data), "argument")
    if settings.values["data"] == "builtin" and not _is_builtin(base):
        raise InputError(f"{base}: a Hugging Face model needs training data for the trial; give data "
                         "(a JSONL file like the run's)")
    return settings


def _is_builtin(base: Path) -> bool:
    from .model import is_builtin_dir
    return is_builtin_dir(base)


def _from_train_config(path: Path) -> RunSettings:
    doc = read_json(path, "train_config.json")
    cfg = doc.get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("steps"), int):
        raise InputError(f"{path}: not a dora-diag train_config.json (no config with steps)")
    method = cfg.get("method")
    if method != "lora":
        raise InputError(f"{path}: the run's method is {method!r}; the trial starts from a LoRA run "
                         "(it trains LoRA and DoRA with that run's settings)")
    settings = RunSettings()
    source = "train_config.json"
    for name in COPIED:
        if name in cfg:
            settings.set(name, _checked(path, name, cfg[name]), source)
    settings.set("run_steps", cfg["steps"], source)
    warmup = cfg.get("warmup_steps")
    settings.set("warmup_fraction", warmup / cfg["steps"] if isinstance(warmup, int) else WARMUP_FRACTION,
                 source if isinstance(warmup, int) else "default")
    return settings


def _checked(path: Path, name: str, value):
    """``value`` if it has the type of TrainConfig's ``name`` (ints allowed for floats; targets as a tuple)."""
    default = getattr(_DEFAULTS, name)
    if default is None:  # quantize: None or a method name (TrainConfig.validate checks which)
        ok = value is None or isinstance(value, str)
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default)) and (isinstance(default, bool) or not isinstance(value, bool))
    if not ok:
        expected = "string or null" if default is None else type(default).__name__
        raise InputError(f"{path}: config {name} is {value!r}, expected a {expected}")
    return value


def adapter_dir(run: Path) -> Path:
    """``run`` itself if it holds adapter_config.json, else its last ``checkpoint-N`` that does."""
    if (run / "adapter_config.json").is_file():
        return run
    steps = sorted((int(m.group(1)), d) for d in run.iterdir()
                   if d.is_dir() and (m := CHECKPOINT_DIR.match(d.name)) and (d / "adapter_config.json").is_file())
    if not steps:
        raise InputError(f"{run}: neither train_config.json nor adapter_config.json (in it or a checkpoint-N); "
                         "the trial needs a LoRA run written by 'dora-diag train' or a PEFT LoRA adapter")
    return steps[-1][1]


def _from_adapter_config(run: Path) -> RunSettings:
    path = adapter_dir(run) / "adapter_config.json"
    parsed = read_adapter_config(path)  # refuses non-LORA types and variants PEFT cannot merge
    if parsed.use_dora:
        raise InputError(f"{path}: a DoRA adapter (use_dora true); the trial starts from a LoRA run")
    if parsed.rank_pattern or parsed.alpha_pattern:
        raise InputError(f"{path}: rank_pattern/alpha_pattern give modules their own rank; the trial trains "
                         "one rank and alpha for every target")
    raw = read_json(path, "adapter_config.json")
    settings = RunSettings()
    source = "adapter_config.json"
    settings.set("rank", parsed.r, source)
    settings.set("alpha", parsed.alpha, source)
    settings.set("use_rslora", parsed.use_rslora, source)
    settings.set("targets", _targets(path, raw.get("target_modules")), source)
    if isinstance(raw.get("lora_dropout"), (int, float)) and not isinstance(raw["lora_dropout"], bool):
        settings.set("dropout", float(raw["lora_dropout"]), source)
    step = _recorded_steps(path.parent)
    if step is not None:
        settings.set("run_steps", step, "trainer_state.json")
    settings.set("warmup_fraction", WARMUP_FRACTION, "default")
    return settings


def _targets(path: Path, value) -> tuple[str, ...]:
    """PEFT target_modules: a list of names (suffix match) or one regular expression (full match)."""
    if isinstance(value, str) and value != "all-linear":
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(sorted(value))
    raise InputError(f"{path}: target_modules is {value!r}; the trial needs module names or a regular "
                     "expression (PEFT's 'all-linear' depends on the model class: list the modules)")


def _recorded_steps(checkpoint: Path) -> int | None:
    state = checkpoint / "trainer_state.json"
    if not state.is_file():
        return None
    step = read_json(state, "trainer_state.json").get("global_step")
    return step if isinstance(step, int) and not isinstance(step, bool) and step > 0 else None


def _trial_steps(settings: RunSettings, steps: int | None) -> int:
    """The user's ``steps``, else the run's steps capped at TRIAL_STEPS (recorded as the source)."""
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
            raise InputError(f"trial steps must be a positive integer, got {steps!r}")
        settings.sources["steps"] = "argument"
        return steps
    run_steps = settings.values.get("run_steps")
    settings.sources["steps"] = f"the run's steps, at most {TRIAL_STEPS}" if run_steps else "default"
    return min(run_steps, TRIAL_STEPS) if run_steps else TRIAL_STEPS


def matched_configs(settings: RunSettings, base: Path, steps: int, seeds: int, device: str) -> list[TrainConfig]:
    """One TrainConfig per (seed, method), seed-major; the pair of a seed differs only in method."""
    v = settings.values
    warmup = int(steps * v["warmup_fraction"])
    common = {name: v[name] for name in COPIED}
    return [TrainConfig(out=f"{method}-seed{seed}", method=method, model=str(base), steps=steps,
                        save_every=steps, log_every=steps, warmup_steps=warmup, seed=seed, device=device,
                        **common)
            for seed in range(seeds) for method in TRIAL_METHODS]


def _train_one(cfg: TrainConfig, workdir: Path, progress: TrainProgress) -> dict:
    """Train one matched run under ``workdir``; its eval metrics and mean step time."""
    run_dir = train(replace(cfg, out=str(workdir / cfg.out)), progress)
    final = final_eval(run_dir)
    times = [r["step_time_s"] for r in read_metrics(run_dir) if "step_time_s" in r]
    return {"method": cfg.method, "seed": cfg.seed, "steps": cfg.steps, "eval_loss": final["eval_loss"],
            "eval_accuracy": final.get("eval_accuracy"), "step_time_s": statistics.fmean(times)}


def paired_difference(runs: list[dict]) -> dict:
    """DoRA - LoRA per seed for eval loss (and accuracy when every run has one): mean, sample sd."""
    by_seed: dict[int, dict[str, dict]] = {}
    for r in runs:
        by_seed.setdefault(r["seed"], {})[r["method"]] = r

    def diffs(metric: str) -> list[float] | None:
        pairs = [(s["dora"][metric], s["lora"][metric]) for s in by_seed.values()]
        return None if any(d is None or lo is None for d, lo in pairs) else [d - lo for d, lo in pairs]

    loss, acc = diffs("eval_loss"), diffs("eval_accuracy")
    return {"metric": "eval_loss", "mean": statistics.fmean(loss), "sd": statistics.stdev(loss),
            "per_seed": loss, "seeds": len(loss),
            "accuracy_mean": None if acc is None else statistics.fmean(acc),
            "accuracy_sd": None if acc is None else statistics.stdev(acc)}


def summary(difference: dict, steps: int) -> str:
    """One sentence: the direction and size of the eval-loss difference, ± its seed sd."""
    mean, sd, k = difference["mean"], difference["sd"], difference["seeds"]
    verb = "lowered" if mean < 0 else "raised" if mean > 0 else "did not change"
    size = f" by {abs(mean):.3g} ± {sd:.2g}" if mean else f" (± {sd:.2g})"
    text = f"DoRA {verb} eval loss{size} over {k} seeds (matched {steps}-step runs; ± is the sd over seeds)"
    if difference["accuracy_mean"] is not None:
        text += f"; eval accuracy {difference['accuracy_mean']:+.3g} ± {difference['accuracy_sd']:.2g}"
    return text
