"""The scipy-free t distribution against 40-digit mpmath (independent) and scipy's Cephes."""

import math

import mpmath
import numpy as np
import pytest
from scipy import special

from dora_diag.analysis import student_t

SHAPES = [0.5, 1.0, 1.5, 2.5, 7.0, 30.5, 250.0, 2000.0, 60000.0]


@pytest.mark.parametrize("a", SHAPES)
@pytest.mark.parametrize("b", [0.5, 1.0, 3.0, 40.0])
def test_betainc_matches_high_precision(a, b):
    """Near x = 1 scipy itself is off by ~1e-10 relative (0.5, 0.5, 1 - 1e-12); mpmath is not."""
    with mpmath.workdps(40):
        for x in np.concatenate([np.geomspace(1e-12, 0.5, 13), 1 - np.geomspace(1e-12, 0.5, 13)]):
            got = student_t.betainc(a, b, float(x))
            if special.betainc(a, b, x) < 1e-280:   # below float range: mpmath cannot bound it either
                assert got < 1e-270
                continue
            want = float(mpmath.betainc(a, b, 0, mpmath.mpf(float(x)), regularized=True))
            assert got == pytest.approx(want, rel=1e-12 * max(10.0, a + b), abs=1e-300), (a, b, x)


def test_betainc_edges():
    assert student_t.betainc(2.0, 0.5, 0.0) == 0.0
    assert student_t.betainc(2.0, 0.5, 1.0) == 1.0
    assert math.isnan(student_t.betainc(0.0, 0.5, 0.3))
    assert math.isnan(student_t.betainc(2.0, 0.5, 1.5))


@pytest.mark.parametrize("df", [1, 2, 3, 5, 11, 40, 1000, 100000])
def test_two_sided_p_matches_scipy(df):
    for t in [0.0, 1e-6, 0.3, 1.0, 2.0, 4.5, 12.0, 80.0, 1e4]:
        want = 2 * special.stdtr(df, -t)
        assert student_t.two_sided_p(t, df) == pytest.approx(want, rel=1e-10, abs=1e-300), (df, t)
        assert student_t.two_sided_p(-t, df) == student_t.two_sided_p(t, df)
    assert student_t.two_sided_p(math.inf, df) == 0.0
    assert math.isnan(student_t.two_sided_p(math.nan, df))


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 29, 500])
def test_quantile_matches_scipy(df):
    for q in [1e-9, 0.001, 0.025, 0.1, 0.5, 0.9, 0.975, 0.999, 1 - 1e-9]:
        assert student_t.quantile(df, q) == pytest.approx(special.stdtrit(df, q), rel=1e-10, abs=1e-12), (df, q)
    assert math.isnan(student_t.quantile(df, 0.0)) and math.isnan(student_t.quantile(df, 1.0))


def test_pearson_p_is_the_t_test_p():
    """stats.fit's p from betainc((n-2)/2, 1/2, 1 - r^2) is scipy.stats.pearsonr's."""
    from scipy.stats import pearsonr

    from dora_diag.analysis.stats import fit

    rng = np.random.default_rng(3)
    for n in (4, 9, 60, 700):
        x = rng.standard_normal(n)
        y = 0.2 * x + rng.standard_normal(n)
        assert fit(x, y)["naive_p"] == pytest.approx(pearsonr(x, y).pvalue, rel=1e-9)
