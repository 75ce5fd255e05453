import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast import grid, output_maps, power_mean
from tests.oracle.aggregate import output_maps_reference


def test_power_mean_definition():
    p = torch.tensor([[0.5, 0.1], [1.0, 0.3], [0.0, 0.2]])
    torch.testing.assert_close(power_mean(p, 5), (p.double() ** 5).mean(0).float())
    torch.testing.assert_close(power_mean(p, 1), p.mean(0))
    assert power_mean(p, 50)[0] == pytest.approx(1 / 3, rel=1e-3)  # dominated by the max patch


@pytest.mark.parametrize("bad,match", [(torch.zeros(0, 3), "no patches"), (torch.zeros(3), "shape")])
def test_power_mean_bad(bad, match):
    with pytest.raises(ValueError, match=match):
        power_mean(bad)


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
