"""``Analysis``: the result of a comparison, with tables, statistics and every output format."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from ..outputs.atomic import write_atomic
from ..outputs.tabular import dump_json, frame_records, table_csv
from .stats import grouped_fits, pooled_fits, standardize_within, fit_points

BY = ("module", "layer", "run")


@dataclass
class Analysis:
    """Per-tensor ΔM/ΔD for every checkpoint of every run against one base.

    ``table`` has one row per tensor (and fused group) per checkpoint; ``meta`` records the
    inputs, device, timings and everything that was skipped or unmatched.
    """

    table: pd.DataFrame
    meta: dict = field(default_factory=dict)

    # ---- statistics --------------------------------------------------------------------------
    def stats(self, by: str = "module") -> pd.DataFrame:
        """Pearson/Spearman/OLS of ΔM on ΔD per run and ``by``.

        ``by="module"``: one fit per module type over its (layer, checkpoint) points, plus a
        ``(pooled)`` row on values standardized within each module type. ``by="layer"``: one
        fit per layer over its (module, checkpoint) points, standardized within module type.
        ``by="run"``: the pooled fit alone.
        """
        if by not in BY:
            raise ValueError(f"by must be one of {BY}, not {by!r}")
        whole = self.table[self.table["group"] == ""]
        if by == "run":
            return pooled_fits(whole).drop(columns="module")
        if by == "layer":
            pts = standardize_within(fit_points(whole), ["run", "module"])
            return grouped_fits(pts, ["run", "layer"])
        per_module = grouped_fits(self.table, ["run", "module"])
        return pd.concat([per_module, pooled_fits(whole)], ignore_index=True)

    @property
    def runs(self) -> list[str]:
        return [r["label"] for r in self.meta.get("runs", [])]

    # ---- outputs -----------------------------------------------------------------------------
    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        text = table_csv(self.table)
        if path is not None:
            write_atomic(path, text)
        return text

    def summary(self) -> dict:
        """Everything but the per-tensor table, as plain JSON-ready data."""
        return {
            **self.meta,
            "stats": {
                "by_module": frame_records(self.stats("module")),
                "by_layer": frame_records(self.stats("layer")),
            },
        }

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = dump_json(self.summary())
        if path is not None:
            write_atomic(path, text)
        return text

    def to_html(self, path: str | os.PathLike | None = None) -> str:
        from ..report.html import render_report

        text = render_report(self)
        if path is not None:
            write_atomic(path, text)
        return text

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
                f"{self.table['tensor'].nunique()} tensors, axis={self.meta.get('axis')}>")
