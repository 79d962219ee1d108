"""ΔD–ΔM coupling with the layer as the unit of independence.

The points of a fit are (layer, checkpoint, module type) cells of one run. Checkpoints of one
layer are snapshots of the same weights on one trajectory and module types of one layer share
it, so only layers are independent: confidence intervals resample layers (a cluster bootstrap)
and p-values permute layer labels. Data live in a cube ``x, y: (L, C, M)`` — L layers, C
checkpoints, M module types — with a boolean ``mask`` of the cells that exist.

Three statistics, each a Pearson r of (ΔD, ΔM) after z-scoring both within each module type:

- ``pearson``: centred per module type only — the paper's Figure-2 r (pooled over modules);
- ``within_checkpoint``: centred per (checkpoint, module type), so a trend shared by every
  layer over training steps cannot make r positive; only differences between layers at the
  same step count;
- ``partial``: centred per (checkpoint, module type), then ΔD and ΔM are residualised on layer
  depth (one least-squares slope per module type), removing the shared depth trend as well.

Everything is written for a batch of layer weights ``w: (B, L)`` (resample counts), so one
call evaluates a statistic on B bootstrap samples at once.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

KINDS = ("pearson", "within_checkpoint", "partial")
BOOTSTRAP = 2000
PERMUTATIONS = 2000
SEED = 0
_CHUNK_CELLS = 2_000_000   # B x cells per evaluation: bounds memory to a few tens of MB
CI_METHOD = f"layer-cluster percentile bootstrap, {BOOTSTRAP} resamples of layers, seed {SEED}"


@dataclass(frozen=True)
class Cube:
    """Cells of one run: ``x`` = ΔD, ``y`` = ΔM, ``mask`` = cell present; all (L, C, M).

    ``units`` names the L layers (the resampled units), ``depth`` is each layer's index (L,).
    """

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    units: tuple
    depth: np.ndarray

    @property
    def n(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True)
class Estimate:
    """One statistic with its layer-level 95% CI and two-sided permutation p."""

    r: float
    ci_low: float
    ci_high: float
    p: float


def _moments(v: np.ndarray, w: np.ndarray, axes: tuple) -> np.ndarray:
    total = w.sum(axis=axes, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * v).sum(axis=axes, keepdims=True) / total


def _residuals(v: np.ndarray, w: np.ndarray, kind: str, depth: np.ndarray) -> np.ndarray:
    """``v`` (B, L, C, M) z-scored within module and centred/residualised as ``kind`` says."""
    mean = _moments(v, w, (1, 2))
    sd = np.sqrt(_moments((v - mean) ** 2, w, (1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (v - mean) / sd                       # NaN for a module type constant in this sample
    z = np.where(w > 0, z, 0.0)
    if kind == "pearson":
        return z
    zc = z - np.where(w > 0, _moments(z, w, (1,)), 0.0)
    if kind == "within_checkpoint":
        return zc
    d = np.broadcast_to(depth[None, :, None, None], v.shape)
    dc = np.where(w > 0, d - _moments(d, w, (1,)), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (w * zc * dc).sum(axis=(1, 2), keepdims=True) / (w * dc * dc).sum(axis=(1, 2), keepdims=True)
    return zc - slope * dc


def _batch_r(cube: Cube, w_units: np.ndarray, kind: str, y: np.ndarray | None = None,
             mask: np.ndarray | None = None) -> np.ndarray:
    """r of ``kind`` for each of B samples -> (B,), NaN where undefined.

    ``w_units`` (B, L) weighs layers (resample counts); ``y`` and ``mask`` (B, L, C, M) replace
    the cube's ΔM and mask per sample (permutations); arrays of batch size 1 broadcast."""
    y = cube.y[None] if y is None else y
    mask = cube.mask[None] if mask is None else mask
    w = w_units[:, :, None, None] * mask
    x = np.where(mask, cube.x[None], 0.0)
    y = np.where(mask, y, 0.0)
    xr, yr = _residuals(x, w, kind, cube.depth), _residuals(y, w, kind, cube.depth)
    keep = np.isfinite(xr) & np.isfinite(yr)
    w = np.where(keep, w, 0.0)
    xr, yr = np.where(keep, xr, 0.0), np.where(keep, yr, 0.0)
    sxy = (w * xr * yr).sum(axis=(1, 2, 3))
    sxx, syy = (w * xr * xr).sum(axis=(1, 2, 3)), (w * yr * yr).sum(axis=(1, 2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    # z-scored values have variance ~1 per cell; residual variance near zero means nothing is
    # left to correlate (e.g. ΔD exactly linear in depth), and r there is rounding noise.
    cells = w.sum(axis=(1, 2, 3))
    r[~(np.minimum(sxx, syy) > 1e-12 * np.maximum(cells, 1.0))] = np.nan
    return np.clip(r, -1.0, 1.0)


def _chunked(cube: Cube, rows: int, evaluate) -> np.ndarray:
    """``evaluate(start, stop)`` over row chunks small enough to bound memory."""
    step = max(1, _CHUNK_CELLS // max(1, cube.mask.size))
    return np.concatenate([evaluate(i, min(rows, i + step)) for i in range(0, rows, step)]) if rows else np.empty(0)


def estimate(cube: Cube, kind: str) -> float:
    """The statistic on the data as observed."""
    return float(_batch_r(cube, np.ones((1, len(cube.units))), kind)[0])


def bootstrap_weights(n_units: int, n: int = BOOTSTRAP, seed: int = SEED) -> np.ndarray:
    """(n, n_units) resample counts: each row draws n_units layers with replacement.

    Deterministic in (n_units, n, seed), so fits over the same layers share their resamples
    (which makes differences between runs a paired bootstrap)."""
    g = np.random.default_rng(seed)
    draws = g.integers(0, n_units, size=(n, n_units))
    return np.stack([np.bincount(row, minlength=n_units) for row in draws]).astype(np.float64)


def bootstrap(cube: Cube, kind: str, weights: np.ndarray | None = None) -> np.ndarray:
    """The statistic on each layer resample (B,); NaN where a resample leaves it undefined."""
    w = bootstrap_weights(len(cube.units)) if weights is None else weights
    return _chunked(cube, len(w), lambda a, b: _batch_r(cube, w[a:b], kind))


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite samples; NaN when fewer than half are finite."""
    ok = samples[np.isfinite(samples)]
    if len(ok) < max(2, len(samples) // 2):
        return math.nan, math.nan
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def permutations(n_units: int, n: int = PERMUTATIONS, seed: int = SEED) -> tuple[np.ndarray, bool]:
    """(orders (K, n_units), exact): all n_units! orders when that is at most ``n``, else the
    identity plus n random ones."""
    if math.factorial(n_units) <= n:
        return np.array(list(itertools.permutations(range(n_units)))), True
    g = np.random.default_rng(seed)
    return np.vstack([np.arange(n_units), np.stack([g.permutation(n_units) for _ in range(n)])]), False


def p_method(n_units: int) -> str:
    if math.factorial(n_units) <= PERMUTATIONS:
        return f"exact permutation of layer labels of ΔM (all {math.factorial(n_units)} orders), two-sided"
    return f"permutation of layer labels of ΔM, {PERMUTATIONS} random orders, seed {SEED}, two-sided"


def permutation_p(cube: Cube, kind: str, observed: float) -> float:
    """Two-sided p: how often |r| with ΔM's layers shuffled (ΔD, checkpoints, modules kept) reaches
    the observed |r|. The identity order is counted, so p is never 0."""
    if math.isnan(observed):
        return math.nan
    orders, _ = permutations(len(cube.units))
    ones = np.ones((1, len(cube.units)))

    def evaluate(a: int, b: int) -> np.ndarray:
        idx = orders[a:b]
        return _batch_r(cube, ones, kind, cube.y[idx], cube.mask[None] & cube.mask[idx])

    r = _chunked(cube, len(orders), evaluate)
    ok = np.isfinite(r)
    return float((np.abs(r[ok]) >= abs(observed) - 1e-12).sum() / ok.sum())


def estimate_all(cube: Cube, kind: str) -> Estimate:
    r = estimate(cube, kind)
    lo, hi = percentile_ci(bootstrap(cube, kind)) if not math.isnan(r) else (math.nan, math.nan)
    return Estimate(r, lo, hi, permutation_p(cube, kind, r))
