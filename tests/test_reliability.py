"""Calibration metrics (:mod:`midlevel_fast.metrics.reliability`): expected calibration error and Brier score against
loops over the pairs and by hand, per class and pooled, ignored pairs, reliability bins."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast.metrics.reliability import brier_score, expected_calibration_error, reliability_bins
from tests.oracle.calibration import brier_loop, ece_loop

# Exact bin edges, 1 and 0 among the probabilities: where a binning slip would show.
PROBS = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1.0, 1 / 15, 2 / 15, 7 / 15, 14 / 15, 0.5]))


@given(data=st.lists(st.tuples(PROBS, st.booleans(), st.booleans()), min_size=1, max_size=40),
       classes=st.integers(1, 3), bins=st.sampled_from([1, 5, 15]))
def test_metrics_equal_the_loops_per_class_and_pooled(data, classes, bins):
    n = len(data) // classes
    if n == 0:
        return
    p = np.array([d[0] for d in data[: n * classes]]).reshape(n, classes)
    y = np.array([d[1] for d in data[: n * classes]]).reshape(n, classes)
    ignore = np.array([d[2] for d in data[: n * classes]]).reshape(n, classes)
    ece, ece_all = expected_calibration_error(p, y, ignore, bins)
    brier, brier_all = brier_score(torch.from_numpy(p), torch.from_numpy(y), torch.from_numpy(ignore))
    for c in range(classes):
        keep = ~ignore[:, c]
        if keep.any():
            assert ece[c] == pytest.approx(ece_loop(p[keep, c], y[keep, c], bins), abs=1e-12)
            assert brier[c] == pytest.approx(brier_loop(p[keep, c], y[keep, c]), abs=1e-12)
        else:
            assert np.isnan(ece[c]) and np.isnan(brier[c])
    kept = ~ignore
    if kept.any():
        assert ece_all == pytest.approx(ece_loop(p[kept], y[kept], bins), abs=1e-12)
        assert brier_all == pytest.approx(brier_loop(p[kept], y[kept]), abs=1e-12)
    else:
        assert np.isnan(ece_all) and np.isnan(brier_all)


def test_hand_worked_values():
    # Bins of width 1/15: 0.05 and 0.06 share bin 0 (mean 0.055, one of two present), 0.95 and 1.0 bin 14
    # (mean 0.975, both present). ECE = 2/4·|0.5 − 0.055| + 2/4·|1 − 0.975| = 0.2225 + 0.0125 = 0.235.
    p = np.array([[0.05], [0.06], [0.95], [1.0]])
    y = np.array([[True], [False], [True], [True]])
    ece, ece_all = expected_calibration_error(p, y)
    assert ece[0] == pytest.approx(0.235) and ece_all == pytest.approx(0.235)
    # Brier: (0.95² + 0.06² + 0.05² + 0²)/4 = (0.9025 + 0.0036 + 0.0025)/4 = 0.22715.
    assert brier_score(p, y)[1] == pytest.approx(0.22715)
    b = reliability_bins(p, y)
    assert b.counts.tolist() == [2] + [0] * 13 + [2] and b.edges[0] == 0 and b.edges[-1] == 1 and len(b.edges) == 16
    assert b.confidence[0] == pytest.approx(0.055) and b.frequency[14] == 1.0 and np.isnan(b.frequency[1:14]).all()


def test_perfect_calibration_has_zero_error():
    # 0.25 in one bin with one of four present, 0.75 in another with three of four: ECE 0.
    p = np.array([0.25] * 4 + [0.75] * 4)[:, None]
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=bool)[:, None]
    assert expected_calibration_error(p, y)[1] == pytest.approx(0.0)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"must all be \(N, C\)"):
        brier_score(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        expected_calibration_error(np.array([[1.5]]), np.array([[True]]))
    with pytest.raises(ValueError, match="bins must be >= 1"):
        reliability_bins(np.array([[0.5]]), np.array([[True]]), bins=0)
