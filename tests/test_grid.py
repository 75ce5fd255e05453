"""The paper's grid (:mod:`midlevel_fast.features.grid`): counts worked by hand on the VOC size, and the rule as
properties: inside the image edge to edge, steps at most ``step·s``, and no more patches than that needs."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast import PAPER_SCALES, grid


def test_paper_count_on_voc_size():
    g = grid(500, 375)
    assert g.boxes.shape == (512, 4) and g.boxes.dtype == torch.float32
    assert g.scale_index.shape == (512,) and g.scale_index.dtype == torch.int64
    # Per-scale counts from the rule n = ceil((L - s) / (s/3)) + 1 on each axis, worked by hand.
    counts = torch.bincount(g.scale_index, minlength=len(PAPER_SCALES)).tolist()
    assert counts == [2 * 1, 4 * 2, 5 * 3, 6 * 4, 8 * 6, 10 * 7, 11 * 8, 13 * 9, 14 * 10]


def test_sides_and_order():
    g = grid(500, 375)
    side = g.boxes[:, 2] - g.boxes[:, 0]
    assert torch.allclose(side, g.boxes[:, 3] - g.boxes[:, 1])
    for i, lam in enumerate(PAPER_SCALES):
        sel = side[g.scale_index == i]
        assert torch.allclose(sel, torch.full_like(sel, 375 / lam))
    assert torch.all(g.scale_index[1:] >= g.scale_index[:-1])


def test_determinism():
    a, b = grid(333, 501), grid(333, 501)
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scale_index, b.scale_index)


@given(
    w=st.floats(1, 3000),
    h=st.floats(1, 3000),
    step=st.sampled_from([1 / 3, 0.25, 0.5]),
)
def test_rule_holds(w, h, step):
    g = grid(w, h, step=step)
    b = g.boxes.double()
    tol = 1e-3 * max(w, h)
    # Inside the image, edge to edge.
    assert (b[:, :2] >= -tol).all() and (b[:, 2] <= w + tol).all() and (b[:, 3] <= h + tol).all()
    for i, lam in enumerate(PAPER_SCALES):
        s = min(w, h) / lam
        sb = b[g.scale_index == i]
        for axis, length in ((0, w), (1, h)):
            starts = torch.unique(sb[:, axis])
            assert starts[0].item() == pytest.approx(0.0, abs=tol)
            assert starts[-1].item() + s == pytest.approx(length, abs=tol)
            steps = starts.diff()
            # Step at most step·s, so neighbours overlap by at least 1 - step (>= 50 %).
            assert (steps <= step * s + tol).all()
            # The fewest positions that keep the step within step·s: one position fewer would step further.
            n = len(starts)
            if n > 2:
                assert (length - s) / (n - 2) > step * s - tol


def test_coverage_of_every_pixel():
    g = grid(333, 501)
    covered = torch.zeros(501, 333, dtype=torch.bool)
    for x0, y0, x1, y1 in g.boxes[g.scale_index == len(PAPER_SCALES) - 1].tolist():
        covered[int(y0): math.ceil(y1), int(x0): math.ceil(x1)] = True
    assert covered.all()


@pytest.mark.parametrize("w,h", [(0, 10), (10, -1), (float("nan"), 5), (5, float("inf")), ("a", 5)])
def test_bad_sizes(w, h):
    with pytest.raises(ValueError, match="width|height"):
        grid(w, h)


@pytest.mark.parametrize("kwargs,match", [
    ({"scales": [0.5]}, "scales"), ({"scales": []}, "scales"), ({"step": 0}, "step"), ({"step": 2}, "step"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        grid(100, 100, **kwargs)
