"""map_points and window_points (midlevel_fast/scoring/points.py) on hand-made maps and against the oracles
(flood fill, window sums box by box), and ScoreResult.points filled by score_image for the mapped classes only."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast import load_model, output_maps, score_image
from midlevel_fast.model.classifier import PatchClassifier
from midlevel_fast.ops.aggregate import window_sums
from midlevel_fast.scoring.points import map_points, window_points
from tests.helpers import skimage_photo
from tests.oracle.pointing import map_point_reference, window_sum_maps_reference


def point(heat) -> tuple[float, float]:
    return tuple(map_points(torch.as_tensor(heat, dtype=torch.float32)).tolist())


def test_single_maximum_is_its_pixel_centre():
    heat = torch.zeros(4, 6)
    heat[2, 5] = 1.0
    heat[0, 0] = 0.999
    assert point(heat) == (5.5, 2.5)


def test_one_by_one_and_constant_maps():
    assert point([[0.3]]) == (0.5, 0.5)
    assert point(torch.zeros(3, 8)) == (4.0, 1.5), "all equal: one region, the centre of the map"
    assert point(torch.full((5, 5), 0.2)) == (2.5, 2.5)


def test_plateau_gives_its_centroid():
    heat = torch.zeros(10, 10)
    heat[2:5, 6:10] = 0.7  # rows 2..4, columns 6..9: centres x 6.5..9.5, y 2.5..4.5
    assert point(heat) == (8.0, 3.5)


def test_largest_region_wins_then_the_first_in_row_major_order():
    heat = torch.zeros(6, 8)
    heat[0, 7] = 1.0  # first in row-major order, one pixel
    heat[3:5, 1:3] = 1.0  # four pixels
    assert point(heat) == (2.0, 4.0)
    heat[3:5, 1:3] = 0.0
    heat[5, 0] = 1.0  # two single pixels: the first one met
    assert point(heat) == (7.5, 0.5)


def test_diagonal_pixels_are_separate_regions():
    heat = torch.zeros(4, 4)
    heat[0, 1] = heat[1, 0] = heat[2, 3] = heat[3, 3] = 1.0  # (0,1) and (1,0) touch by a corner only
    assert point(heat) == (3.5, 3.0), "the vertical pair (2,3)-(3,3) is the only two-pixel region"


def test_non_convex_region_centroid():
    # An L of 4 pixels: (0,0), (1,0), (2,0), (2,1): x centres 0.5, 0.5, 0.5, 1.5; y 0.5, 1.5, 2.5, 2.5.
    heat = torch.zeros(3, 3)
    heat[0:3, 0] = 2.0
    heat[2, 1] = 2.0
    assert point(heat) == (0.75, 1.75)


def test_u_shape_joined_only_at_the_bottom_is_one_region():
    """Two columns that meet in a later row: the union of runs has to merge them."""
    heat = torch.zeros(4, 5)
    heat[0:4, 0] = heat[0:4, 4] = heat[3, :] = 1.0  # 4 + 4 + 3 = 11 pixels
    heat[0, 2] = 1.0  # a lone pixel between them
    x, y = point(heat)
    want = map_point_reference(heat.tolist())
    assert (x, y) == pytest.approx(want) and x == pytest.approx(2.5)


def test_shapes_dtypes_and_bad_input():
    maps = torch.zeros(3, 4, 5)
    maps[1, 3, 4] = 1
    got = map_points(maps)
    assert got.shape == (3, 2) and got.dtype == torch.float64
    assert got[1].tolist() == [4.5, 3.5] and got[0].tolist() == [2.5, 2.0]
    assert map_points(torch.tensor([[0, 3], [1, 2]])).tolist() == [1.5, 0.5], "integer maps"
    assert map_points(maps.double()[1]).shape == (2,)
    for bad, match in ((torch.zeros(5), "shape"), (torch.zeros(2, 0, 3), "at least one pixel"),
                       (torch.tensor([[0.0, float("nan")]]), "NaN")):
        with pytest.raises(ValueError, match=match):
            map_points(bad)


@given(h=st.integers(1, 12), w=st.integers(1, 12), levels=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_matches_the_flood_fill_oracle(h, w, levels, seed):
    """Few distinct values, so that ties, plateaus and several maximal regions are common."""
    heat = np.random.default_rng(seed).integers(0, levels, size=(h, w)).astype(np.float32) / 4
    assert point(heat) == pytest.approx(map_point_reference(heat.tolist()), abs=1e-12)


def test_window_sum_by_hand_and_where_it_differs_from_the_mean():
    """A 1×10 strip: three windows of probability 1 over pixels 0..2, and an object covered by six windows of
    0.9 around pixel 6. The mean map peaks on the left (1.0 > 0.9), the sum on the object (5.4 > 3)."""
    boxes = torch.tensor([[0.0, 0.0, 3.0, 1.0]] * 3 + [[4.0, 0.0, 9.0, 1.0]] * 6)
    probs = torch.tensor([[1.0]] * 3 + [[0.9]] * 6)
    sums = window_sums(boxes, probs, 1, 10)
    torch.testing.assert_close(sums[0, 0], torch.tensor([3.0] * 3 + [0.0] + [5.4] * 5 + [0.0]))
    assert window_points(boxes, probs, 1, 10).tolist() == [[6.5, 0.5]]
    assert map_points(output_maps(boxes, probs, 1, 10)).tolist() == [[1.5, 0.5]]
    with pytest.raises(ValueError, match="boxes"):
        window_sums(boxes[:2], probs, 1, 10)


@given(h=st.integers(1, 12), w=st.integers(1, 12), m=st.integers(1, 6), c=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_window_sums_match_the_oracle(h, w, m, c, seed):
    rng = np.random.default_rng(seed)
    corners = rng.integers(-4, 4 * max(h, w) + 4, size=(m, 2, 2)) / 4  # quarter pixels, partly outside
    boxes = torch.tensor(np.concatenate([corners.min(1), corners.max(1)], 1), dtype=torch.float32)
    probs = torch.from_numpy(rng.integers(0, 4, size=(m, c)) / 4).float()
    want = torch.tensor(window_sum_maps_reference(boxes.tolist(), probs.tolist(), h, w))
    torch.testing.assert_close(window_sums(boxes, probs, h, w), want, atol=1e-5, rtol=0)
    got = window_points(boxes, probs, h, w)
    assert got.tolist() == [list(map_point_reference(want[k].tolist())) for k in range(c)]


@pytest.fixture(scope="module")
def lite0_one_scale():
    model = load_model("imagenet")
    return PatchClassifier(model.backbone, model.head, dataclasses.replace(model.info, scales=[1.0])).eval()


def test_score_result_points_for_the_mapped_classes_only(lite0_one_scale):
    photo = skimage_photo("chelsea")
    res = score_image(photo, lite0_one_scale, mode="dense", return_maps=2)
    assert list(res.points) == res.map_classes and len(res.points) == 2
    h, w = photo.shape[:2]
    idx = [res.class_names.index(c) for c in res.map_classes]
    want = window_points(res.windows, res.probs[:, idx], h, w)
    for c, p in zip(res.map_classes, want.tolist()):
        assert res.points[c] == tuple(p)
        assert 0 <= p[0] <= w and 0 <= p[1] <= h
    assert score_image(photo, lite0_one_scale, mode="dense").points == {}
