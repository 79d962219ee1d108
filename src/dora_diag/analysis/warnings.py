"""Warnings of a comparison: what the table flags or the plan left out that a user must see.

One line each, aggregated per checkpoint so that a broken model gives a few lines, not one per
tensor. ``compare`` stores them in ``Analysis.meta.warnings``; the CLI prints them to stderr.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .plan import Plan, TensorPlan
from .stream import TargetResult
from .table import ZERO_CHANGE

EXAMPLES = 2


def _examples(names: list[str]) -> str:
    shown = ", ".join(names[:EXAMPLES])
    return shown + (f", ... ({len(names) - EXAMPLES} more)" if len(names) > EXAMPLES else "")


class WarningLog:
    """Collects per-tensor findings while streaming; ``lines`` renders them at the end."""

    def __init__(self) -> None:
        self._nonfinite: dict[tuple[str, str], list[tuple[str, tuple[str, ...]]]] = defaultdict(list)
        self._resized: list[str] = []
        self._unchanged: dict[str, list[tuple[str, str]]] = defaultdict(list)   # run -> (checkpoint, tensor)
        self._identical: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])   # (tensors, equal)

    def add(self, plan: TensorPlan, results: list[TargetResult], rows: list[dict]) -> None:
        """``rows``: the table rows of these results (``table.rows_for``), for their flags."""
        self._unchanged_in(rows)
        for r in results:
            key = (r.target.ref.run, r.target.ref.name)
            if r.nonfinite:
                self._nonfinite[key].append((plan.info.name, r.nonfinite_in))
            self._resized.extend(f"{key[0]}/{key[1]}: {plan.info.name} {flag}; compared the {r.target.rows} shared "
                                 "rows" for flag in r.target.flags if flag.startswith("resized"))

    def _unchanged_in(self, rows: list[dict]) -> None:
        for row in rows:
            if row["group"]:
                continue
            if ZERO_CHANGE in row["flags"].split(";"):
                self._unchanged[row["run"]].append((row["checkpoint"], row["tensor"]))
            counts = self._identical[(row["run"], row["checkpoint"])]
            counts[0] += 1
            counts[1] += row["delta_d"] == 0 and row["delta_m"] == 0

    def lines(self, plan: Plan) -> list[str]:
        out = [f"{run}/{ckpt}: every one of its {n} compared tensors equals the base exactly: the same "
               "checkpoint given twice, or a fine-tune that never ran?"
               for (run, ckpt), (n, equal) in self._identical.items() if n and equal == n and run not in self._unchanged]
        for run, found in self._unchanged.items():
            ckpts = len({c for c, _ in found})
            out.append(f"{run}: {len(found)} adapted tensor(s) in {ckpts} checkpoint(s) are exactly the base "
                       f"({_examples(sorted({t for _, t in found}))}): the adapter changes nothing there (B = 0, "
                       f"or a DoRA magnitude equal to the base norm); flagged '{ZERO_CHANGE}'")
        for (run, ckpt), found in self._nonfinite.items():
            sides = sorted({s for _, sides in found for s in sides})
            out.append(f"{run}/{ckpt}: {len(found)} tensor(s) with NaN/Inf values in the {' and '.join(sides)} "
                       f"weights ({_examples([n for n, _ in found])}): flagged 'nonfinite', their non-finite "
                       "channels left out of ΔM/ΔD and the tensors left out of the fits")
        out.extend(self._resized)
        out.extend(plan.notes)
        out.extend(_skip_lines(plan.skipped))
        out.extend(_unmatched_lines(plan.unmatched))
        fp8 = plan.unscaled
        if fp8:
            out.append(f"{len(fp8)} fp8 tensor(s) have scale tensors of a layout not understood ({_examples(fp8)}): "
                       "their raw fp8 values are compared without the scales (ΔD is then exact only for "
                       "per-tensor or per-row scales; ΔM is in unscaled units)")
        return out


def _skip_lines(skipped: list[dict]) -> list[str]:
    """Tensors a fine-tuned checkpoint has but that could not be compared (shape, dtype)."""
    by_ckpt: dict[tuple[str, str], list[str]] = defaultdict(list)
    for s in skipped:
        if "run" in s:
            by_ckpt[(s["run"], s["checkpoint"])].append(f"{s['tensor']}: {s['reason']}")
    return [f"{run}/{ckpt}: {len(items)} tensor(s) not compared ({_examples(items)}); listed under 'skipped' "
            "in the JSON" for (run, ckpt), items in by_ckpt.items()]


def _unmatched_lines(unmatched: list[dict]) -> list[str]:
    by_ckpt: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: {"finetuned": [], "base": []})
    for u in unmatched:
        by_ckpt[(u["run"], u["checkpoint"])][u["side"]].append(u["tensor"])
    out = []
    for (run, ckpt), sides in by_ckpt.items():
        parts = [f"{len(names)} only in the {'fine-tuned checkpoint' if side == 'finetuned' else 'base'} "
                 f"({_examples(names)})" for side, names in sides.items() if names]
        out.append(f"{run}/{ckpt}: unmatched tensors: {'; '.join(parts)}; listed under 'unmatched' in the JSON")
    return out


def base_hints(base) -> list[str]:
    """A base that looks like a training checkpoint: base and fine-tuned given the wrong way round?"""
    if (Path(base) / "trainer_state.json").is_file():
        return [f"{base}: BASE holds trainer_state.json, which training writes into its checkpoints: "
                "are BASE and the fine-tuned run swapped?"]
    return []
