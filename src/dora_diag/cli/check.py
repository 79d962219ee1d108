"""``dora-diag check``: the "will DoRA help?" verdict after a short LoRA run."""

from __future__ import annotations

import math

import click

from ..options import CHECK_ALPHA, CHECK_MIN_R, CHECK_MIN_UNITS, CHECK_TRIAL_SEEDS
from ..outputs.paths import check_outputs
from ..records import Verdict
from .executors import executor_kwargs, executor_options
from .messages import echo, print_warnings
from .numbers import FiniteRange
from .progress import BarProgress
from .stream_options import stream_kwargs, stream_options


def _fmt(x: float, spec: str) -> str:
    return "n/a" if x is None or math.isnan(x) else format(x, spec)


def stat_line(label: str, s: dict) -> str:
    """``q_proj  n=24 layers=6  partial r=+0.52 [+0.21, +0.75] p=0.004  Pearson r=+0.90``"""
    ci = "" if math.isnan(s["partial_ci_low"]) else f" [{s['partial_ci_low']:+.2f}, {s['partial_ci_high']:+.2f}]"
    return (f"  {label:<24} n={s['n']:<4} layers={s['units']:<3} partial r={_fmt(s['partial_r'], '+.2f')}{ci} "
            f"p={_fmt(s['partial_p'], '.2g')}  Pearson r={_fmt(s['pearson_r'], '+.2f')}")


def print_verdict(v: Verdict) -> None:
    """One ``records.Verdict``: headline, statistics, decision, why and note."""
    echo(f"{v.run} ({v.method}): {v.headline}")
    echo(stat_line("pooled", v.pooled))
    for m in v.modules:
        echo(stat_line(m["module"], m))
    echo(f"  decision: {v.decision} (decided by {v.decided_by}; statistic: {v.statistic_why})")
    echo(f"  why: {v.reason}")
    echo(f"  note: {v.note}")


def _trials(analysis, base: str, steps, seeds: int, data, device: str, quiet: bool) -> dict[str, dict]:
    """A matched LoRA-vs-DoRA trial for every LoRA-family run of ``analysis``."""
    from ..io.method import LORA_FAMILY
    from ..train.trial import run_trial

    out = {}
    for run in analysis.meta.runs:
        if run.method in LORA_FAMILY:
            out[run.label] = run_trial(base, run.path, steps=steps, seeds=seeds, data=data, device=device,
                                       progress=_trial_progress(run.label, quiet))
    return out


def _trial_progress(label: str, quiet: bool):
    from .train import TrainBar

    return lambda method, seed, steps: TrainBar(f"trial {label}: {method} seed {seed}", steps, not quiet)


def _audit(base: str, axis: str, json_: str | None, out: str | None, block_mb: float, quiet: bool) -> None:
    """``check BASE`` alone: the zero-channel audit (``analysis.audit``)."""
    from ..analysis.audit import audit_base
    from ..errors import InputError

    if out:
        raise InputError("--out (the HTML report) needs runs to check; a base alone is audited: use --json")
    audit = audit_base(base, axis=axis, block_bytes=max(1, int(block_mb * 2**20)),
                       progress=BarProgress("auditing", not quiet))
    if json_:
        audit.to_json(json_)
    if not quiet:
        for line in audit.lines():
            echo(line)


@click.command("check")
@click.argument("paths", nargs=-1, required=True, metavar="[BASE] [LABEL=]RUN... | BASE")
@click.option("--out", type=click.Path(), help="Write the HTML report (with the verdict cards) here.")
@click.option("--json", "json_", type=click.Path(),
              help="Write the verdicts, statistics and inputs as JSON (BASE alone: the audit's findings).")
@click.option("--min-r", type=FiniteRange(-1, 1), default=CHECK_MIN_R, show_default=True,
              help="Detrended (partial) r above which DoRA likely helps, with layer-level p < --significance.")
@click.option("--significance", type=FiniteRange(0, 1, min_open=True, max_open=True), default=CHECK_ALPHA,
              show_default=True,
              help="Significance level of the layer-permutation p (and of the trial's interval).")
@click.option("--min-units", type=click.IntRange(min=1), default=CHECK_MIN_UNITS, show_default=True,
              help="Fewer independent layers than this is too little data to decide.")
@click.option("--trial", is_flag=True, help="Also train matched short LoRA and DoRA runs from BASE (direct evidence).")
@click.option("--trial-steps", type=click.IntRange(min=1), help="Steps of each trial run (default: the LoRA run's, capped).")
@click.option("--trial-seeds", type=click.IntRange(min=2), default=CHECK_TRIAL_SEEDS, show_default=True,
              help="Seeds per method in the trial.")
@click.option("--data", type=click.Path(), help="Training data (JSONL) for the trial, if the run does not record it.")
@stream_options
@executor_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no printed verdict.")
def check_cmd(paths, out, json_, min_r, significance, min_units, trial, trial_steps, trial_seeds, data,
              axis, device, split_fused, allow_partial, block_mb, executor, ray_address, task_mb, quiet):
    """Will DoRA help? The ΔD–ΔM coupling of each LoRA RUN against BASE, with a decision.

    With one path: an adapter or a run directory of adapters is checked against the base its
    adapter_config.json names (base_model_name_or_path: a local path, or a model id found in
    the local Hugging Face cache; nothing is downloaded); a model alone (BASE) is audited
    before a DoRA run instead: its weight matrices with all-zero channels along --axis, whose
    norm 0 makes a naive DoRA divide by zero, one line each (--json for the list; exit 0).

    Each RUN is [LABEL=]PATH: a PEFT adapter directory, a run directory of checkpoint-N/
    adapters, or a full fine-tuned run. Only LoRA-family runs get a decision; full fine-tuning
    and DoRA runs given alongside are described and compared with. The heuristic uses the
    partial r (step and depth trends removed) with a layer-level CI and permutation p:
    r > --min-r with p < --significance: DoRA may help (dora_likely_helps); r < 0 with
    p < --significance: gain likely marginal; otherwise, or with fewer than --min-units
    layers, inconclusive. The heuristic is not shown to predict DoRA's gain: in
    reports/verdict-calibration.md it said "may help" on a real pretrained model where DoRA's
    eval loss came out higher, and on the 4-layer builtin model it never decides. --trial
    measures DoRA against LoRA directly and decides when its interval excludes zero.
    """
    from ..analysis.compare import compare
    from ..analysis.verdict import check_thresholds, verdict
    from ..io.run_base import base_of_run

    base, runs = (paths[0], paths[1:]) if len(paths) > 1 else (base_of_run(paths[0]), paths)
    check_outputs({"--out": out, "--json": json_}, [p for p in (base, *runs) if p])
    if base is None:
        return _audit(paths[0], axis, json_, out, block_mb, quiet)
    thresholds = {"min_r": min_r, "alpha": significance, "min_units": min_units}
    check_thresholds(**thresholds)
    # analysis.check.check's steps, with the trials (which need the comparison's runs) between
    # comparing and judging, so that the verdicts are computed once.
    analysis = compare(base, *runs, progress=BarProgress("checking", not quiet),
                       **stream_kwargs(axis, device, split_fused, allow_partial, block_mb),
                       **executor_kwargs(executor, ray_address, task_mb))
    print_warnings(analysis, quiet)
    trials = _trials(analysis, base, trial_steps, trial_seeds, data, device, quiet) if trial else None
    analysis = analysis.with_verdicts(verdict(analysis, **thresholds, trials=trials))
    if json_:
        analysis.to_json(json_)
    if out:
        analysis.to_html(out)
    if not quiet:
        for v in analysis.verdicts:
            print_verdict(v)
