"""``Analysis``: the result of a comparison, with tables, statistics and every output format."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import pandas as pd

from ..outputs.atomic import write_atomic
from ..outputs.tabular import dump_json, frame_records, table_csv
from ..records import Meta, Verdict
from .stats import POOLED, expert_stats, fit_points, layer_stats, module_stats

BY = ("module", "layer", "run", "expert")


@dataclass(frozen=True, eq=False)
class Analysis:
    """Per-tensor ΔM/ΔD for every checkpoint of every run against one base.

    ``table`` has one row per tensor (and fused group) per checkpoint; ``meta`` (``records.Meta``)
    records the inputs, device, timings and everything that was skipped or unmatched; ``verdicts``
    holds the "will DoRA help?" verdicts once ``check`` has given them (None before: no verdict
    was asked for). Statistics are computed once, on first use, and kept; ``with_verdicts`` and
    ``with_meta`` derive an analysis that shares them.
    """

    table: pd.DataFrame
    meta: Meta = field(default_factory=Meta)
    verdicts: tuple[Verdict, ...] | None = None
    _stats: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.meta, Meta):
            raise TypeError(f"meta must be a dora_diag.records.Meta (Meta.from_json reads the JSON summary's "
                            f"fields), not {type(self.meta).__name__}")

    def with_verdicts(self, verdicts) -> Analysis:
        """This analysis with ``verdicts`` (``verdict.verdict`` of it) attached."""
        return self._derive(verdicts=tuple(verdicts))

    def with_meta(self, meta: Meta) -> Analysis:
        """This analysis recorded as ``meta`` (e.g. with ``temporary_dirs``, or a run's log)."""
        return self._derive(meta=meta)

    def _derive(self, **changes) -> Analysis:
        new = replace(self, **changes)
        # The statistics depend on the table and the runs' labels and methods only: while those
        # stay, the new analysis shares the computed ones (frozen, hence object.__setattr__).
        if new.meta.labels == self.meta.labels and new.meta.methods == self.meta.methods:
            object.__setattr__(new, "_stats", self._stats)
        return new

    # ---- statistics --------------------------------------------------------------------------
    def stats(self, by: str = "module") -> pd.DataFrame:
        """ΔD–ΔM statistics per run and ``by`` (a copy; computed once).

        ``by="module"``: one row per module type over its (layer, checkpoint) points, plus a
        ``(pooled)`` row over all module types z-scored within each. Columns: the paper's
        ``pearson_r``; ``within_checkpoint_r`` and ``partial_r`` (the shared step and depth
        trends removed); each with a layer-cluster bootstrap 95% CI (``*_ci_low/high``) and a
        layer-permutation p (``*_p``), ``units`` = independent layers, ``ci_method``,
        ``p_method``; the naive Fisher-z CI and t-test p (``naive_*``, points taken as
        independent), Spearman ρ, OLS slope and intercept. ``by="run"``: the pooled rows alone.
        ``by="layer"``: one descriptive fit per layer over its (module, checkpoint) points.
        ``by="expert"``: MoE experts apart (pooled within their module type otherwise).
        """
        if by not in BY:
            raise ValueError(f"by must be one of {BY}, not {by!r}")
        key = "module" if by == "run" else by
        if key not in self._stats:
            compute = {"layer": layer_stats, "module": module_stats, "expert": expert_stats}[key]
            self._stats[key] = compute(self.points, self.methods, self.runs)
        out = self._stats[key]
        if by == "run":
            out = out[out["module"] == POOLED].drop(columns="module").reset_index(drop=True)
        return out.copy()

    @property
    def points(self) -> pd.DataFrame:
        """The rows of ``table`` that enter fits: tensors inside a layer with finite ΔD and ΔM."""
        if "points" not in self._stats:
            self._stats["points"] = fit_points(self.table)
        return self._stats["points"]

    @property
    def methods(self) -> dict[str, str]:
        """Run label -> fine-tuning method (``io.method``), "unknown" where nothing said."""
        return self.meta.methods

    @property
    def runs(self) -> list[str]:
        return self.meta.labels

    # ---- outputs -----------------------------------------------------------------------------
    def to_csv(self, path: str | os.PathLike | None = None) -> str | None:
        """The per-tensor table as CSV: returned as text, or written atomically to ``path``
        (then None, as pandas does, so a notebook cell does not echo the whole file)."""
        return _write_or_return(table_csv(self.table), path)

    def summary(self) -> dict:
        """Everything but the per-tensor table, as plain JSON-ready data."""
        out = {
            **self.meta.to_json(),
            "stats": {
                "by_module": frame_records(self.stats("module")),
                "by_layer": frame_records(self.stats("layer")),
            },
        }
        if "expert" in self.table.columns and self.table["expert"].notna().any():
            out["stats"]["by_expert"] = frame_records(self.stats("expert"))
        if self.verdicts is not None:
            out["verdicts"] = [v.to_json() for v in self.verdicts]
        return out

    def to_json(self, path: str | os.PathLike | None = None) -> str | None:
        """``summary()`` as JSON text, or written atomically to ``path`` (then None)."""
        return _write_or_return(dump_json(self.summary()), path)

    def to_html(self, path: str | os.PathLike | None = None) -> str | None:
        """The self-contained HTML report, or written atomically to ``path`` (then None)."""
        from ..report.html import render_report

        return _write_or_return(render_report(self), path)

    def figure(self, kind: str = "scatter", **kwargs):
        """A plotly Figure: ``kind`` in ``report.figures.FIGURES`` (scatter, profile, heatmap, ...)."""
        from ..report.figures import make_figure

        return make_figure(self, kind, **kwargs)

    def _repr_html_(self) -> str:
        from ..report.html import render_summary

        return render_summary(self)

    def __repr__(self) -> str:
        n_ckpt = self.table[["run", "checkpoint"]].drop_duplicates().shape[0]
        return (f"<Analysis {len(self.runs)} run(s), {n_ckpt} checkpoint(s), "
                f"{self.table['tensor'].nunique()} tensors, axis={self.meta.axis}>")


def _write_or_return(text: str, path: str | os.PathLike | None) -> str | None:
    if path is None:
        return text
    write_atomic(path, text)
    return None
