"""The calibration's outcome rules: seed intervals against scipy's t-test, calls and grades."""

import pytest
from scipy import stats

from calibration_outcome import (BETTER, NO_CALL, RIGHT, UNCLEAR, WORSE, WRONG, heuristic_grade, outcome,
                                 seed_interval, trial_grade)


def test_seed_interval_matches_scipy_one_sample_t():
    values = [-0.31, -0.12, -0.25, 0.02, -0.40]
    iv = seed_interval(values)
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert iv["n"] == 5
    assert iv["mean"] == pytest.approx(sum(values) / 5)
    assert (iv["ci_low"], iv["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_one_seed_has_no_interval_and_no_call():
    iv = seed_interval([-0.5])
    assert iv["sd"] is None and outcome(iv) == UNCLEAR


@pytest.mark.parametrize("values, call", [([-0.30, -0.32, -0.28], BETTER), ([0.30, 0.32, 0.28], WORSE),
                                          ([-0.5, 0.4, -0.1], UNCLEAR)])
def test_outcome_needs_an_interval_that_excludes_zero(values, call):
    assert outcome(seed_interval(values)) == call


@pytest.mark.parametrize("values, call", [([0.05, 0.06, 0.04], BETTER), ([-0.05, -0.06, -0.04], WORSE),
                                          ([0.05, -0.06, 0.01], UNCLEAR)])
def test_outcome_of_a_metric_where_higher_is_better(values, call):
    assert outcome(seed_interval(values), higher_is_better=True) == call


@pytest.mark.parametrize("decision, actual, grade", [
    ("dora_likely_helps", BETTER, RIGHT), ("dora_likely_helps", UNCLEAR, WRONG), ("dora_likely_helps", WORSE, WRONG),
    ("marginal", BETTER, WRONG), ("marginal", UNCLEAR, RIGHT), ("marginal", WORSE, RIGHT),
    ("inconclusive", BETTER, NO_CALL), ("not_applicable", WORSE, NO_CALL), (None, BETTER, NO_CALL)])
def test_heuristic_grade(decision, actual, grade):
    assert heuristic_grade(decision, actual) == grade


def test_trial_grade_compares_calls():
    assert trial_grade(BETTER, BETTER) == RIGHT
    assert trial_grade(UNCLEAR, BETTER) == WRONG
