"""Student's t tail probabilities and quantiles, without scipy.

The summary of every ``compare`` prints p-values, and importing ``scipy.special`` for them
costs ~0.5 s of start-up (reports/benchmarks.md, "Start-up"), more than the rest of a small run.
Both functions rest on the regularized incomplete beta function, evaluated with its continued
fraction (Numerical Recipes, 3rd ed., §6.4, modified Lentz); tests hold them to scipy's
``betainc``/``stdtr``/``stdtrit`` to ~1e-10 relative (the error grows
with the shape parameters, through ``lgamma``: ~1e-11 at a = 60000, i.e. 120000 points).
"""

from __future__ import annotations

import math

_TINY = 1e-300
_EPS = 1e-16


def betainc(a: float, b: float, x: float, complement: float | None = None) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0 and 0 <= x <= 1.

    ``complement``: 1 - x where the caller knows it more exactly than ``1 - x`` rounds it
    (x = 1 - r² near 1 has lost r²'s digits; a t tail passes both parts of df / (df + t²))."""
    y = 1.0 - x if complement is None else complement
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        return math.nan
    if x == 0.0 or y == 0.0:
        return 0.0 if x == 0.0 else 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log(y))
    # The continued fraction converges fast for x below the mean a / (a + b); above it, use
    # I_x(a, b) = 1 - I_{1-x}(b, a).
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, y) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    # Terms needed grow like sqrt(max(a, b)); the cap is far above that for any n we fit.
    for m in range(1, 100_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                    -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    return h


def two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for T ~ Student's t with ``df`` degrees of freedom."""
    if math.isnan(t) or not df > 0:
        return math.nan
    if math.isinf(t):
        return 0.0
    t2 = t * t
    return betainc(df / 2, 0.5, df / (df + t2), t2 / (df + t2))


def quantile(df: float, q: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (0 < q < 1), by
    bisection on the tail probability: exact to the last few ulps, and only ever called for
    a handful of intervals."""
    if not (df > 0 and 0.0 < q < 1.0):
        return math.nan
    if q == 0.5:
        return 0.0
    tail = min(q, 1.0 - q)           # P(T > t) for the positive t wanted
    lo, hi = 0.0, 1.0
    while two_sided_p(hi, df) / 2 > tail:
        hi *= 2.0
        if math.isinf(hi):
            return math.copysign(math.inf, q - 0.5)
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if two_sided_p(mid, df) / 2 > tail else (lo, mid)
    t = (lo + hi) / 2
    return t if q > 0.5 else -t
