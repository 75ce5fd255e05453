"""Window pooling of image-level supervision against direct loops over the windows."""
from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from midlevel_fast.training.pooling import POOLINGS, pool_windows


def direct(p: list[float], pooling: str, k: float, r: float) -> float:
    """The pooled probability of one image's windows ``p``, written out in 60-digit decimals."""
    with localcontext() as ctx:
        ctx.prec = 60
        d = [Decimal(x) for x in p]
        if pooling == "max":
            return float(max(d))
        if pooling == "power-mean":
            return float((sum(x ** Decimal(k) for x in d) / len(d)) ** (1 / Decimal(k)))
        return float((sum((Decimal(r) * x).exp() for x in d) / len(d)).ln() / Decimal(r))


@st.composite
def windows(draw):
    """Images of 1..9 windows (padded to the longest), 1..4 classes; probabilities include exact 0 and 1."""
    counts = draw(st.lists(st.integers(1, 9), min_size=1, max_size=4))
    classes = draw(st.integers(1, 4))
    value = st.one_of(st.just(0.0), st.just(1.0), st.floats(1e-30, 1.0))
    probs = np.zeros((len(counts), max(counts), classes))
    for i, n in enumerate(counts):
        probs[i, :n] = np.array(draw(st.lists(value, min_size=n * classes, max_size=n * classes))).reshape(n, classes)
    mask = np.arange(max(counts))[None, :] < np.array(counts)[:, None]
    return probs, mask, counts


@pytest.mark.parametrize("pooling", POOLINGS)
@given(case=windows(), k=st.sampled_from([1.0, 2.5, 5.0]), r=st.sampled_from([1.0, 10.0]))
def test_pooling_matches_the_direct_loop(pooling, case, k, r):
    probs, mask, counts = case
    # Padding holds junk: it must not count.
    padded = np.where(mask[:, :, None], probs, 0.7)
    with np.errstate(divide="ignore"):
        log_p = torch.from_numpy(np.log(padded))
    got = pool_windows(log_p, torch.from_numpy(mask), pooling, k=k, r=r).exp().numpy()
    for i, n in enumerate(counts):
        for c in range(probs.shape[2]):
            p = probs[i, :n, c].tolist()
            want = direct(p, pooling, k, r)
            assert got[i, c] == pytest.approx(want, rel=1e-9, abs=1e-300), (p, pooling)
            assert np.mean(p) * (1 - 1e-12) <= got[i, c] <= max(p) * (1 + 1e-12) or max(p) == 0


def test_power_mean_gradient_is_finite_where_a_window_has_probability_zero():
    log_p = torch.tensor([[[-math.inf], [math.log(0.3)], [-200.0]]], requires_grad=True)
    pooled = pool_windows(log_p, torch.ones(1, 3, dtype=torch.bool), "power-mean")
    pooled.sum().backward()
    assert torch.isfinite(pooled).all() and torch.isfinite(log_p.grad).all()
    # Only the window that carries the mean learns; p = 0 (and p = e^-200, far below float32's range) get nothing.
    assert float(log_p.grad[0, 1, 0]) == pytest.approx(1.0) and float(log_p.grad[0, [0, 2], 0].abs().max()) == 0


def test_max_pooling_sends_the_gradient_to_the_best_window_only():
    log_p = torch.log(torch.tensor([[[0.2, 0.9], [0.6, 0.1]]])).requires_grad_()
    pool_windows(log_p, torch.ones(1, 2, dtype=torch.bool), "max").sum().backward()
    assert log_p.grad.tolist() == [[[0.0, 1.0], [1.0, 0.0]]]


def test_bad_arguments_are_refused():
    log_p, mask = torch.zeros(2, 3, 1), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool_windows(log_p, mask, "mean")
    with pytest.raises(ValueError, match="at least one window"):
        pool_windows(log_p, torch.tensor([[True, False, False], [False] * 3]), "max")
    with pytest.raises(ValueError, match=r"need log_probs \(B, N, C\)"):
        pool_windows(log_p[0], mask, "max")
    with pytest.raises(ValueError, match="k > 0"):
        pool_windows(log_p, mask, "power-mean", k=0)
    with pytest.raises(ValueError, match="0 < r <= 80"):
        pool_windows(log_p, mask, "log-sum-exp", r=-1)
