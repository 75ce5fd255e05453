"""Fitting the presence calibration (:mod:`midlevel_fast.training.calibration_fit`): Platt's Newton fit against plain
gradient descent, pool-adjacent-violators against every block partition, the knots, the prior rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from midlevel_fast.model.presence import SCORE_FLOOR, isotonic_presence, presence_probabilities
from midlevel_fast.training.calibration_fit import fit_calibration, fit_isotonic, fit_platt, pool_adjacent_violators
from tests.oracle.calibration import isotonic_brute_force, platt_gradient_descent, platt_loss


def scores_and_labels(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Log scores spread like power-mean scores (1e-12 .. 1), positives more likely at high scores."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-28, 0, n)
    y = rng.random(n) < 1 / (1 + np.exp(-(0.4 * x + 3)))
    y[:2] = [True, False]  # both classes present
    return x, y


@pytest.mark.parametrize("seed", range(4))
def test_platt_matches_gradient_descent_on_the_same_objective(seed):
    x, y = scores_and_labels(seed)
    a, b = fit_platt(x, y)
    a_ref, b_ref = platt_gradient_descent(x, y)
    assert platt_loss(x, y, a, b) <= platt_loss(x, y, a_ref, b_ref) + 1e-9
    np.testing.assert_allclose([a, b], [a_ref, b_ref], rtol=1e-5, atol=1e-6)


def test_platt_stays_finite_on_separable_data():
    # Every positive above every negative: without Platt's targets the likelihood has no maximum.
    x = np.array([-20.0, -15, -12, -3, -2, -1])
    y = np.array([False, False, False, True, True, True])
    a, b = fit_platt(x, y)
    assert np.isfinite([a, b]).all() and a > 0
    # The optimum's conditions against Platt's targets (1/(3 + 2) for the negatives, 4/5 for the positives):
    # the residuals sum to zero, alone and weighted by the score.
    residual = 1 / (1 + np.exp(-(a * x + b))) - np.where(y, 0.8, 0.2)
    np.testing.assert_allclose([residual.sum(), residual @ x], [0, 0], atol=1e-6)


@given(y=st.lists(st.floats(0, 1), min_size=1, max_size=9), w=st.lists(st.integers(1, 4), min_size=9, max_size=9))
@example(y=[0.0, 1.192092896e-07], w=[1] * 9)  # already monotone, all costs tiny: once failed in the oracle
def test_pool_adjacent_violators_is_the_exact_isotonic_fit(y, w):
    weights = np.array(w[: len(y)], dtype=np.float64)
    fit = pool_adjacent_violators(np.array(y), weights)
    np.testing.assert_allclose(fit, isotonic_brute_force(y, weights), atol=1e-9)
    assert (np.diff(fit) >= -1e-12).all()


@given(x=st.lists(st.integers(-6, 0), min_size=2, max_size=9), y=st.lists(st.booleans(), min_size=9, max_size=9))
def test_isotonic_knots_reproduce_the_fit_at_every_score(x, y):
    """Tied scores are pooled first (their mean label, weighted by their count); the knots' interpolation gives
    back the isotonic fit at every distinct score and is constant beyond the ends."""
    x = np.array(x, dtype=np.float64)
    y = np.array(y[: len(x)])
    knots = fit_isotonic(x, y)
    distinct = np.unique(x)
    mean = np.array([y[x == v].mean() for v in distinct])
    counts = np.array([(x == v).sum() for v in distinct], dtype=np.float64)
    want = isotonic_brute_force(mean, counts)
    got = isotonic_presence(torch.from_numpy(distinct)[:, None], torch.from_numpy(knots)[None])[:, 0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert len(knots) >= 2 and (np.diff(knots[:, 0]) >= 0).all()
    outside = isotonic_presence(torch.tensor([[x.min() - 5], [x.max() + 5]]), torch.from_numpy(knots)[None])
    np.testing.assert_allclose(outside[:, 0].numpy(), [want[0], want[-1]], atol=1e-12)


def test_fit_calibration_per_class_with_the_prior_rule():
    x, y = scores_and_labels(0, 40)
    scores = np.stack([np.exp(x), np.exp(x), np.exp(x)], axis=1)
    positives = np.stack([y, np.zeros_like(y), np.ones_like(y)], axis=1)  # class 1 never, class 2 always present
    ignore = np.zeros_like(positives)
    ignore[:5, 0] = True  # left out of class 0's fit
    for method in ("platt", "isotonic"):
        cal = fit_calibration(torch.from_numpy(scores), positives, ignore, method, 5.0, ["a", "b", "c"],
                              {"source": "test"})
        assert cal.description == {"source": "test", "method": method, "images": 40, "fallback": ["b", "c"]}
        assert cal.k == 5.0 and cal.scores.dtype == torch.float64 and torch.equal(cal.ignore, torch.from_numpy(ignore))
        p = presence_probabilities(torch.from_numpy(scores), cal)
        assert p.dtype == torch.float32 and p.shape == (40, 3)
        # The prior rule: (N+ + 1)/(N + 2), whatever the score.
        torch.testing.assert_close(p[:, 1], torch.full((40,), 1 / 42))
        torch.testing.assert_close(p[:, 2], torch.full((40,), 41 / 42))
    a, b = fit_platt(x[5:], y[5:])
    platt = fit_calibration(scores, positives, ignore, "platt", 5.0, ["a", "b", "c"])
    torch.testing.assert_close(platt.parameters[0], torch.tensor([a, b], dtype=torch.float64))


def test_zero_scores_count_as_the_floor():
    scores = np.array([[0.0], [SCORE_FLOOR], [1e-3], [0.5]])
    cal = fit_calibration(scores, [[False], [False], [True], [True]], None, "platt", 5.0, ["a"])
    p = presence_probabilities(torch.tensor([[0.0], [SCORE_FLOOR / 10]]), cal)
    assert torch.isfinite(p).all() and p[0, 0] == p[1, 0]


def test_fit_calibration_refuses_bad_input():
    with pytest.raises(ValueError, match="method must be one of"):
        fit_calibration(np.ones((2, 1)), np.ones((2, 1)), None, "beta", 5.0, ["a"])
    with pytest.raises(ValueError, match=r"C = 2 classes"):
        fit_calibration(np.ones((2, 1)), np.ones((2, 1)), None, "platt", 5.0, ["a", "b"])
    with pytest.raises(ValueError, match="finite and >= 0"):
        fit_calibration(np.array([[np.nan], [1.0]]), np.ones((2, 1)), None, "platt", 5.0, ["a"])
