"""power_mean and output_maps (midlevel_fast/ops/aggregate, torch backend) on hand-computed cases and against the
oracle (tests/oracle/aggregate.py)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast import grid, output_maps, power_mean
from tests.oracle.aggregate import output_maps_reference, power_mean_reference

PROBS = torch.tensor([[0.5, 0.1], [1.0, 0.3], [0.0, 0.2]])


def test_power_mean_by_hand():
    # k = 5: class 0 (0.5^5 + 1 + 0) / 3 = 1.03125 / 3; class 1 (1e-5 + 243e-5 + 32e-5) / 3 = 276e-5 / 3.
    torch.testing.assert_close(power_mean(PROBS, 5), torch.tensor([1.03125 / 3, 0.00276 / 3]))
    torch.testing.assert_close(power_mean(PROBS, 1), torch.tensor([0.5, 0.2]))  # the mean
    assert power_mean(PROBS, 50)[0] == pytest.approx(1 / 3, rel=1e-3)  # dominated by the max patch
    assert power_mean(PROBS.double(), 5).dtype == torch.float64


@given(m=st.integers(1, 20), c=st.integers(1, 5), k=st.floats(0.5, 8), seed=st.integers(0, 2**16))
def test_power_mean_matches_reference(m, c, k, seed):
    probs = torch.rand(m, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    torch.testing.assert_close(power_mean(probs, k), power_mean_reference(probs, k), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("bad,k,match", [(torch.zeros(0, 3), 5.0, "no patches"), (torch.zeros(3), 5.0, "shape"),
                                         (torch.zeros(2, 3), 0.0, "k must be")])
def test_power_mean_bad(bad, k, match):
    with pytest.raises(ValueError, match=match):
        power_mean(bad, k)


def test_backend_names():
    with pytest.raises(ValueError, match="backend"):
        power_mean(PROBS, 5.0, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        output_maps(torch.zeros(1, 4), PROBS[:1], 2, 2, backend="impl")
    with pytest.raises(ValueError, match="boxes"):
        output_maps(torch.zeros(2, 4), PROBS, 2, 2)


def test_output_maps_by_hand():
    """Two boxes on a 3×4 image: pixel centres at 0.5, 1.5, ...; the overlap pixel averages both."""
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
    maps = output_maps(boxes, torch.tensor([[0.6], [0.2]]), 3, 4)
    want = torch.tensor([[[0.6, 0.6, 0.0, 0.0],
                          [0.6, 0.4, 0.2, 0.0],
                          [0.0, 0.2, 0.2, 0.0]]])
    torch.testing.assert_close(maps, want)


def test_output_maps_cover_pixel_centres_half_open():
    """A pixel is covered when its centre lies in [x0, x1): [0.5, 1.5) covers pixel 0 (centre 0.5) only."""
    maps = output_maps(torch.tensor([[0.5, 0.0, 1.5, 1.0]]), torch.tensor([[1.0]]), 1, 3)
    torch.testing.assert_close(maps, torch.tensor([[[1.0, 0.0, 0.0]]]))


@given(
    h=st.integers(1, 40), w=st.integers(1, 40), n=st.integers(1, 12), c=st.integers(1, 3),
    data=st.data(),
)
def test_output_maps_match_raster_loop(h, w, n, c, data):
    coord = st.floats(-10, 50, allow_nan=False)
    boxes = []
    for _ in range(n):
        x0, y0 = data.draw(coord), data.draw(coord)
        boxes.append([x0, y0, x0 + data.draw(st.floats(0, 40)), y0 + data.draw(st.floats(0, 40))])
    boxes_t = torch.tensor(boxes)
    probs = torch.rand(n, c, generator=torch.Generator().manual_seed(n))
    torch.testing.assert_close(output_maps(boxes_t, probs, h, w), output_maps_reference(boxes_t, probs, h, w),
                               atol=1e-5, rtol=0)


def test_output_maps_on_the_paper_grid():
    g = grid(50, 37)
    probs = torch.rand(len(g.boxes), 2, generator=torch.Generator().manual_seed(0))
    maps = output_maps(g.boxes, probs, 37, 50)
    torch.testing.assert_close(maps, output_maps_reference(g.boxes, probs, 37, 50), atol=1e-5, rtol=0)
    assert (maps > 0).all()  # the grid covers every pixel
