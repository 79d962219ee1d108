"""CSV and JSON serialisations of an analysis: deterministic, NaN-free (NaN -> empty / null)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from .text import encodable


def table_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, lineterminator="\n", float_format="%.10g", na_rep="")


def _clean(value):
    """JSON-safe values: NaN/inf -> None, numpy scalars -> Python, strings UTF-8 can encode."""
    if isinstance(value, dict):
        return {encodable(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def frame_records(df: pd.DataFrame) -> list[dict]:
    return [_clean(r) for r in df.astype(object).where(df.notna(), None).to_dict(orient="records")]


def dump_json(doc: dict) -> str:
    return json.dumps(_clean(doc), indent=2, sort_keys=True, allow_nan=False) + "\n"
