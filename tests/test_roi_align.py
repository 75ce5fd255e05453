"""ROI align (:mod:`midlevel_fast.features.roi_align`) against the box-by-box, sample-by-sample float64 loop of
``tests/oracle/roi.py``, worked by hand, and on bad input."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midlevel_fast.features import roi_align as roi_align_module
from midlevel_fast.features.roi_align import roi_align
from tests.oracle.roi import roi_align_reference


@st.composite
def roi_case(draw):
    """float64 maps of odd and tiny sizes and boxes drawn around them: partly or wholly outside, of zero width or
    height, larger than the map."""
    b, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    height, width = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    n = draw(st.integers(0, 6))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    maps = torch.randn(b, c, height, width, generator=g, dtype=torch.float64)
    x0 = torch.rand(n, generator=g, dtype=torch.float64) * (width + 6) - 3
    y0 = torch.rand(n, generator=g, dtype=torch.float64) * (height + 6) - 3
    size = torch.rand(n, 2, generator=g, dtype=torch.float64) * 1.5 * max(height, width)
    degenerate = torch.rand(n, 2, generator=g) < 0.15
    size = torch.where(degenerate, torch.zeros_like(size), size)
    boxes = torch.stack([x0, y0, x0 + size[:, 0], y0 + size[:, 1]], dim=1)
    return maps, boxes, torch.randint(0, b, (n,), generator=g)


@settings(max_examples=80, deadline=None)
@given(case=roi_case(), output=st.tuples(st.integers(1, 3), st.integers(1, 3)), sampling_ratio=st.integers(0, 3),
       aligned=st.booleans())
def test_roi_align_equals_the_loop_oracle(case, output, sampling_ratio, aligned):
    maps, boxes, batch_index = case
    want = roi_align_reference(maps, boxes, batch_index, output, sampling_ratio, aligned)
    got = roi_align(maps, boxes, batch_index, output, sampling_ratio, aligned)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_roi_align_reads_whole_cells_at_their_centres():
    # aligned, one sample per bin: the box [1, 4) x [2, 4) of cells in 3 x 2 bins is exactly those cells.
    maps = torch.arange(2 * 5 * 6, dtype=torch.float32).view(1, 2, 5, 6)
    got = roi_align(maps, torch.tensor([[1.0, 2.0, 4.0, 4.0]]), torch.tensor([0]), (2, 3), sampling_ratio=1)
    torch.testing.assert_close(got[0], maps[0, :, 2:4, 1:4])
    # One bin of 3 x 2 samples: their mean.
    mean = roi_align(maps, torch.tensor([[1.0, 2.0, 4.0, 4.0]]), torch.tensor([0]), (1, 1), sampling_ratio=0)
    torch.testing.assert_close(mean[0, :, 0, 0], maps[0, :, 2:4, 1:4].mean((1, 2)))


def test_roi_align_gives_the_same_in_chunks(monkeypatch):
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(2, 4, 7, 9, generator=g)
    xy = torch.rand(40, 2, generator=g) * 8
    boxes = torch.cat([xy, xy + torch.rand(40, 2, generator=g) * 5], dim=1)
    batch_index = torch.randint(0, 2, (40,), generator=g)
    whole = [roi_align(maps, boxes, batch_index, size) for size in ((1, 1), (2, 3))]
    monkeypatch.setattr(roi_align_module, "CHUNK_BYTES", 1)  # one box per chunk
    for size, want in zip(((1, 1), (2, 3)), whole):
        torch.testing.assert_close(roi_align(maps, boxes, batch_index, size), want, rtol=1e-6, atol=1e-6)


def test_roi_align_of_no_boxes_is_empty():
    got = roi_align(torch.zeros(1, 3, 4, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), (2, 2))
    assert got.shape == (0, 3, 2, 2)


@pytest.mark.parametrize("maps, boxes, batch_index, output, ratio, match", [
    (torch.zeros(3, 4, 4), torch.zeros(1, 4), torch.zeros(1, dtype=torch.int64), (1, 1), 0, "maps must be"),
    (torch.zeros(1, 3, 4, 4), torch.zeros(1, 5), torch.zeros(1, dtype=torch.int64), (1, 1), 0, "boxes must be"),
    (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4), torch.zeros(2, dtype=torch.int64), (1, 1), 0, "batch_index must"),
    (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4), torch.ones(1, dtype=torch.int64), (1, 1), 0, r"in \[0, 1\)"),
    (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4), torch.zeros(1, dtype=torch.int64), (0, 1), 0, "output_size"),
    (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4), torch.zeros(1, dtype=torch.int64), (1, 1), -1, "sampling_ratio"),
    (torch.zeros(1, 3, 4, 4), torch.tensor([[0.0, float("nan"), 1, 1]]), torch.zeros(1, dtype=torch.int64), (1, 1),
     0, "finite"),
    (torch.zeros(1, 3, 4, 4), torch.tensor([[2.0, 0, 1, 1]]), torch.zeros(1, dtype=torch.int64), (1, 1), 0,
     "x1 >= x0"),
    (torch.zeros(1, 3, 4, 4), torch.tensor([[0.0, 0, 1e7, 1]]), torch.zeros(1, dtype=torch.int64), (1, 1), 0,
     "samples along one axis"),
])
def test_roi_align_refuses_bad_input(maps, boxes, batch_index, output, ratio, match):
    with pytest.raises(ValueError, match=match):
        roi_align(maps, boxes, batch_index, output, ratio)
