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

import functools
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


# Per-group sums (group = checkpoint x module cell column) that every statistic is built from:
# n, Σx, Σy, Σx², Σy², Σxy, Σd, Σd², Σxd, Σyd over the layers present, each weighted by the
# layer's resample count. Sums make a batch of B resamples one (B, L) @ (L, G) product.
_Q = ("n", "x", "y", "xx", "yy", "xy", "d", "dd", "xd", "yd")


def _layer_quantities(x: np.ndarray, y: np.ndarray, mask: np.ndarray, d: np.ndarray) -> dict[str, np.ndarray]:
    """Per-layer terms (..., L, G) of the sums in ``_Q``; ``d`` (L,) broadcasts over groups."""
    m = mask.astype(np.float64)
    x, y = np.where(mask, x, 0.0), np.where(mask, y, 0.0)
    dm = d[:, None] * m
    return {"n": m, "x": x, "y": y, "xx": x * x, "yy": y * y, "xy": x * y, "d": dm, "dd": d[:, None] * dm,
            "xd": x * dm, "yd": y * dm}


@dataclass(frozen=True)
class _Standardized:
    """A cube as every statistic reads it (``_standardized``): x, y, mask (L, G), G = C x M,
    the centred depth (L,), the (C, M) shape of a layer, and the per-layer terms of the sums
    in ``_Q`` laid side by side (L, len(_Q) x G)."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    shape: tuple[int, int]
    terms: np.ndarray


def _standardized(cube: Cube) -> _Standardized:
    """The cube shifted and scaled per module over the present cells, computed once per cube
    and shared by its observed value, bootstrap and permutations of every statistic.

    Every statistic is invariant to these per-module shifts and scales; they keep the sums of
    squares O(1) so that differences of sums lose no precision (ΔD is ~1e-6 with a far smaller
    spread between layers)."""
    L, C, M = cube.mask.shape
    x, y = cube.x.copy(), cube.y.copy()
    for v in (x, y):
        for k in range(M):
            cells = v[:, :, k][cube.mask[:, :, k]]
            if cells.size:
                sd = cells.std()
                v[:, :, k] = (v[:, :, k] - cells.mean()) / (sd if sd > 0 else 1.0)
    depth = cube.depth - (cube.depth.mean() if L else 0.0)
    x, y, mask = x.reshape(L, C * M), y.reshape(L, C * M), cube.mask.reshape(L, C * M)
    q = _layer_quantities(x, y, mask, depth)
    return _Standardized(x, y, mask, depth, (C, M), np.concatenate([q[k] for k in _Q], axis=1))


def _r_from_sums(S: dict[str, np.ndarray], kind: str, shape: tuple[int, int]) -> np.ndarray:
    """r of ``kind`` (B,) from group sums ``S[q]`` (B, G), G = C x M.

    z-scoring within module divides each module's centred sums by its sd; centring per checkpoint
    subtracts group means (Σab − ΣaΣb/n per group); the depth trend is removed per module by
    Frisch–Waugh (R_ab = W_ab − W_ad W_bd / W_dd). Modules whose ΔD or ΔM is constant in a
    sample, or (partial) whose depth does not vary, drop out of that sample."""
    C, M = shape
    S = {q: v.reshape(-1, C, M) for q, v in S.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        n_m = S["n"].sum(1)
        var = {a: S[a + a].sum(1) / n_m - (S[a].sum(1) / n_m) ** 2 for a in ("x", "y")}

        def centred(a: str, b: str, per_group: bool) -> np.ndarray:
            if per_group:
                return np.where(S["n"] > 0, S[a + b] - S[a] * S[b] / S["n"], 0.0).sum(1)
            return S[a + b].sum(1) - S[a].sum(1) * S[b].sum(1) / n_m

        grouped = kind != "pearson"
        wxx, wyy, wxy = (centred(a, b, grouped) for a, b in (("x", "x"), ("y", "y"), ("x", "y")))
        sx, sy = np.sqrt(np.maximum(var["x"], 0)), np.sqrt(np.maximum(var["y"], 0))
        rxx, ryy, rxy = wxx / sx ** 2, wyy / sy ** 2, wxy / (sx * sy)
        if kind == "partial":
            wdd = np.where(S["n"] > 0, S["dd"] - S["d"] ** 2 / S["n"], 0.0).sum(1)
            wxd = np.where(S["n"] > 0, S["xd"] - S["x"] * S["d"] / S["n"], 0.0).sum(1) / sx
            wyd = np.where(S["n"] > 0, S["yd"] - S["y"] * S["d"] / S["n"], 0.0).sum(1) / sy
            rxx, ryy, rxy = rxx - wxd ** 2 / wdd, ryy - wyd ** 2 / wdd, rxy - wxd * wyd / wdd
        ok = (n_m > 0) & (var["x"] > 1e-24) & (var["y"] > 1e-24) & np.isfinite(rxx + ryy + rxy)
        sxx, syy, sxy = (np.where(ok, v, 0.0).sum(1) for v in (rxx, ryy, rxy))
        r = sxy / np.sqrt(sxx * syy)
    # z-scores have variance ~1 per cell; residual variance near zero means nothing is left to
    # correlate (e.g. ΔD exactly linear in depth), and r there is rounding noise.
    cells = np.where(ok, n_m, 0.0).sum(1)
    r[~(np.minimum(sxx, syy) > 1e-12 * np.maximum(cells, 1.0))] = np.nan
    return np.clip(r, -1.0, 1.0)


def _weighted_sums(z: _Standardized, w_units: np.ndarray) -> dict[str, np.ndarray]:
    """The sums ``_Q`` (B, G) for each row of layer weights ``w_units`` (B, L): one product for all."""
    return dict(zip(_Q, np.split(w_units @ z.terms, len(_Q), axis=1)))


def _batch_r(cube: Cube, w_units: np.ndarray, kind: str) -> np.ndarray:
    """r of ``kind`` for each row of layer weights ``w_units`` (B, L) -> (B,), NaN where undefined."""
    z = _standardized(cube)
    return _r_from_sums(_weighted_sums(z, w_units), kind, z.shape)


def _permuted_sums(z: _Standardized, orders: np.ndarray) -> dict[str, np.ndarray]:
    """The sums ``_Q`` (K, G) with ΔM's layers reordered by each row of ``orders`` (K, L); a cell
    counts where both its ΔD and the ΔM moved onto it exist."""
    x, y, mask, d = z.x, z.y, z.mask, z.depth
    if mask.all():
        # Complete cubes (the usual case): only the sums pairing ΔM with ΔD or depth change.
        fixed = dict(zip(_Q, np.split(z.terms.sum(0)[None], len(_Q), axis=1)))
        yp = y[orders]
        S = {k: np.broadcast_to(v, (len(orders), v.shape[1])) for k, v in fixed.items()}
        S["xy"], S["yd"] = np.einsum("lg,klg->kg", x, yp), np.einsum("l,klg->kg", d, yp)
        return S
    mk = mask[None] & mask[orders]
    q = _layer_quantities(x[None], y[orders], mk, d)
    return {k: v.sum(1) for k, v in q.items()}


def _chunked(z: _Standardized, rows: int, evaluate) -> np.ndarray:
    """``evaluate(start, stop)`` over row chunks small enough to bound memory."""
    step = max(1, _CHUNK_CELLS // max(1, z.mask.size))
    return np.concatenate([evaluate(i, min(rows, i + step)) for i in range(0, rows, step)]) if rows else np.empty(0)


def estimate(cube: Cube, kind: str) -> float:
    """The statistic on the data as observed."""
    return float(_batch_r(cube, np.ones((1, len(cube.units))), kind)[0])


@functools.lru_cache(maxsize=16)
def bootstrap_weights(n_units: int, n: int = BOOTSTRAP, seed: int = SEED) -> np.ndarray:
    """(n, n_units) resample counts: each row draws n_units layers with replacement.

    Deterministic in (n_units, n, seed), so fits over the same layers share their resamples
    (which makes differences between runs a paired bootstrap)."""
    g = np.random.default_rng(seed)
    draws = g.integers(0, n_units, size=(n, n_units))
    counts = np.zeros((n, n_units))
    np.add.at(counts, (np.repeat(np.arange(n), n_units), draws.ravel()), 1.0)
    counts.setflags(write=False)   # cached: shared by every caller
    return counts


def bootstrap(cube: Cube, kind: str, weights: np.ndarray | None = None) -> np.ndarray:
    """The statistic on each layer resample (B,); NaN where a resample leaves it undefined."""
    w = bootstrap_weights(len(cube.units)) if weights is None else weights
    return _batch_r(cube, w, kind)


def estimate_and_bootstrap(cube: Cube, kind: str, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """``(estimate(cube, kind), bootstrap(cube, kind, weights))`` from one standardisation."""
    r = _batch_r(cube, np.vstack([np.ones((1, len(cube.units))), weights]), kind)
    return float(r[0]), r[1:]


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite samples; NaN when fewer than half are finite."""
    ok = samples[np.isfinite(samples)]
    if len(ok) < max(2, len(samples) // 2):
        return math.nan, math.nan
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _exact(n_units: int) -> bool:
    """Whether every order of the layers is enumerated (at most PERMUTATIONS of them)."""
    return math.factorial(n_units) <= PERMUTATIONS


@functools.lru_cache(maxsize=16)
def permutations(n_units: int, seed: int = SEED) -> np.ndarray:
    """Orders (K, n_units): all n_units! when ``_exact``, else the identity plus PERMUTATIONS random ones."""
    if _exact(n_units):
        orders = np.array(list(itertools.permutations(range(n_units))))
    else:
        g = np.random.default_rng(seed)
        orders = np.vstack([np.arange(n_units),
                            g.permuted(np.tile(np.arange(n_units), (PERMUTATIONS, 1)), axis=1)])
    orders.setflags(write=False)   # cached: shared by every caller
    return orders


def p_method(n_units: int) -> str:
    if _exact(n_units):
        return f"exact permutation of layer labels of ΔM (all {math.factorial(n_units)} orders), two-sided"
    return f"permutation of layer labels of ΔM, {PERMUTATIONS} random orders, seed {SEED}, two-sided"


def permutation_ps(z: _Standardized, n_units: int, observed: dict[str, float]) -> dict[str, float]:
    """Two-sided p per statistic: how often |r| with ΔM's layers shuffled (ΔD, checkpoints,
    modules kept) reaches the observed |r|; NaN where the observed r is. The identity order is
    counted, so p is never 0. The shuffled sums are computed once for all statistics."""
    kinds = [k for k, r in observed.items() if not math.isnan(r)]
    out = dict.fromkeys(observed, math.nan)
    if not kinds:
        return out
    orders = permutations(n_units)

    def evaluate(a: int, b: int) -> np.ndarray:
        S = _permuted_sums(z, orders[a:b])
        return np.stack([_r_from_sums(S, k, z.shape) for k in kinds], axis=1)

    r = _chunked(z, len(orders), evaluate)
    for i, k in enumerate(kinds):
        ok = np.isfinite(r[:, i])
        out[k] = float((np.abs(r[ok, i]) >= abs(observed[k]) - 1e-12).sum() / ok.sum())
    return out


def estimate_all(cube: Cube) -> dict[str, Estimate]:
    """Every statistic of ``KINDS`` on ``cube`` with its bootstrap CI and permutation p; the cube
    is standardised once and each set of sums (observed, resampled, permuted) serves all three."""
    z, n_units = _standardized(cube), len(cube.units)
    observed = {k: float(r[0]) for k, r in _rs(_weighted_sums(z, np.ones((1, n_units))), z.shape).items()}
    ci = dict.fromkeys(KINDS, (math.nan, math.nan))
    if any(not math.isnan(r) for r in observed.values()):
        resampled = _rs(_weighted_sums(z, bootstrap_weights(n_units)), z.shape)
        ci.update({k: percentile_ci(resampled[k]) for k, r in observed.items() if not math.isnan(r)})
    p = permutation_ps(z, n_units, observed)
    return {k: Estimate(observed[k], *ci[k], p[k]) for k in KINDS}


def _rs(S: dict[str, np.ndarray], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    return {k: _r_from_sums(S, k, shape) for k in KINDS}
