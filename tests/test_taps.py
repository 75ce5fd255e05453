"""The tap tables of midlevel_fast/ops/crop_resize/taps.py (read by the Triton kernel and the torch backend) against
the oracle's resize matrices and the C++ kernel's own taps (csrc/taps.h, which the CUDA kernel computes on the
device), so that all backends filter alike. Runs on the CPU; the tables are plain torch ops, the same on any
device."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast import PADDING_MODES, backends
from midlevel_fast.ops.backends import cpu_ext
from midlevel_fast.ops.crop_resize.schema import CropResizeParams, image_view
from midlevel_fast.ops.crop_resize.taps import axis_taps, kernel_setup, map_index
from tests.oracle.crop_resize import pad_index, resize_matrix


def dense(taps, n_in: int) -> np.ndarray:
    """(N, n_out, n_in) matrices from the tables; index -1 (reads zero) must carry weight 0."""
    index, weight = taps.index.numpy(), taps.weight.numpy()
    n, t, n_out = index.shape
    assert (weight[index < 0] == 0).all()
    m = np.zeros((n, n_out, n_in + 1))
    rows = np.broadcast_to(np.arange(n_out), (t, n_out))
    for b in range(n):
        np.add.at(m[b], (rows, np.where(index[b] < 0, n_in, index[b])), weight[b])
    return m[:, :, :n_in]


axis_case = st.tuples(
    st.floats(-80, 80, allow_nan=False),  # b0
    st.floats(0, 150, allow_nan=False),  # extent
    st.integers(1, 60),  # n_in
    st.integers(1, 40),  # n_out
    st.booleans(),  # antialias
    st.sampled_from(PADDING_MODES),
)


@given(cases=st.lists(axis_case, min_size=1, max_size=4))
def test_tables_equal_reference_matrix(cases):
    """Boxes with different filter widths share one table; each box's rows still equal resize_matrix."""
    for n_in, n_out, antialias, pad in {(c[2], c[3], c[4], c[5]) for c in cases}:
        group = [c for c in cases if (c[2], c[3], c[4], c[5]) == (n_in, n_out, antialias, pad)]
        b0 = torch.tensor([c[0] for c in group], dtype=torch.float64)
        b1 = b0 + torch.tensor([c[1] for c in group], dtype=torch.float64)
        taps = axis_taps(b0, b1, n_in, n_out, antialias, pad)
        got = dense(taps, n_in)
        for k in range(len(group)):
            want = resize_matrix(float(b0[k]), float(b1[k]), n_in, n_out, antialias, pad).numpy()
            np.testing.assert_allclose(got[k], want, atol=1e-6)


@pytest.mark.skipif(not backends()["cpu"].available, reason="C++ extension not built")
@given(case=axis_case)
def test_tables_are_bit_identical_to_the_cpu_kernel_taps(case):
    b0, extent, n_in, n_out, antialias, pad = case
    index, weight = cpu_ext.axis_taps(b0, b0 + extent, n_in, n_out, antialias, getattr(cpu_ext.Padding, pad))
    taps = axis_taps(torch.tensor([b0], dtype=torch.float64), torch.tensor([b0 + extent], dtype=torch.float64),
                     n_in, n_out, antialias, pad)
    assert int(taps.count[0]) == index.shape[1] == taps.index.shape[1]
    ours_index = taps.index[0].T.numpy()
    # The C++ kernel marks zero-padded taps with index n_in, the tables with -1.
    np.testing.assert_array_equal(np.where(ours_index < 0, n_in, ours_index), index)
    np.testing.assert_array_equal(taps.weight[0].T.numpy(), weight)


def test_taps_beyond_a_box_count_weigh_nothing():
    b0 = torch.tensor([0.0, 0.0], dtype=torch.float64)
    b1 = torch.tensor([100.0, 10.0], dtype=torch.float64)  # shrink 10 (20 taps) and 1 (2 taps)
    taps = axis_taps(b0, b1, 100, 10, True, "edge")
    assert taps.count.tolist() == [20, 2] and taps.index.shape == (2, 20, 10)
    assert (taps.weight[1, 2:] == 0).all()
    torch.testing.assert_close(taps.weight.sum(1), torch.ones(2, 10), atol=1e-6, rtol=0)


def test_map_index_matches_reference_padding():
    x = torch.arange(-13, 20)
    for n in (1, 2, 5):
        for mode in PADDING_MODES:
            want = [pad_index(int(i), n, mode) for i in x]
            assert map_index(x, n, mode).tolist() == [-1 if w is None else w for w in want]
    with pytest.raises(ValueError, match="padding_mode"):
        map_index(x, 3, "wrap")


def test_no_boxes_give_empty_tables():
    empty = torch.zeros(0, dtype=torch.float64)
    taps = axis_taps(empty, empty, 10, 7, True, "zeros")
    assert taps.index.shape == (0, 1, 7) and taps.count.shape == (0,)


def test_kernel_setup_folds_normalisation_as_the_cpu_kernel():
    boxes = torch.tensor([[0.0, 1.0, 8.0, 5.0]], dtype=torch.float64)
    params = CropResizeParams(3, 4, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), True, "edge", torch.float32, False, 1)
    setup = kernel_setup(boxes, image_view(torch.zeros(6, 9, 3, dtype=torch.uint8)), params, torch.device("cpu"))
    assert setup.rows.index.shape[2] == 3 and setup.cols.index.shape[2] == 4
    want_scale = np.float32(1.0 / 255.0) / np.asarray([0.229, 0.224, 0.225], np.float32)
    want_shift = -np.asarray([0.485, 0.456, 0.406], np.float32) / np.asarray([0.229, 0.224, 0.225], np.float32)
    assert setup.scale == want_scale.tolist() and setup.shift == want_shift.tolist()
