"""Dense proposals (midlevel_fast/features/proposals.py): the square preset against dense_windows' boxes, the
rectangles against their squares in the documented order, boxes inside the image without duplicates, supersets
when ratios, scales or a finer lattice are added, the presets, and refused input (the dense mode's messages)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from midlevel_fast.backbones import Backbone, get_backbone
from midlevel_fast.backbones.efficientnet_lite import EfficientNetLite0
from midlevel_fast.features.dense import dense_windows
from midlevel_fast.features.grid import PAPER_SCALES
from midlevel_fast.features.limits import check_image_size
from midlevel_fast.features.proposals import (DEFAULT_PROPOSALS, PROPOSAL_PRESETS, SMALL_OBJECT_SCALES,
                                              ProposalConfig, dense_proposals)
from tests.helpers import IMAGENET_MEAN, IMAGENET_STD


class LatticeBackbone(Backbone):
    """EfficientNet-Lite0's geometry (224-px windows of 7 cells of 32 px, its grid offsets) with a trunk that only
    averages each cell: dense_windows' boxes in milliseconds."""

    name = "lattice"
    cell_size = 32
    window = 7
    feature_dim = cell_dim = 3
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    grid_offset = EfficientNetLite0.grid_offset

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(1))  # dense_windows reads the device off a parameter
        self._finalize()

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.cell_size, ceil_mode=True) * self.gain

    def window_head(self, cells: torch.Tensor, window_step: int = 1) -> torch.Tensor:
        return F.avg_pool2d(cells, self.window, stride=window_step)


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: only the geometry is read
        return get_backbone("efficientnet_lite0", pretrained=False)


LATTICE = LatticeBackbone()


@st.composite
def image_size(draw, smallest: int = 45, largest: int = 500):
    width, height = draw(st.integers(smallest, largest)), draw(st.integers(smallest, largest))
    assume(max(width, height) <= 4 * min(width, height))
    return width, height


@st.composite
def config(draw):
    scales = draw(st.lists(st.sampled_from(SMALL_OBJECT_SCALES), min_size=1, max_size=3, unique=True))
    ratios = draw(st.lists(st.sampled_from([1.5, 2.0, 3.0]), max_size=2, unique=True))
    return ProposalConfig(tuple(scales), tuple(ratios), draw(st.sampled_from([1, 2, 4])))


def as_set(boxes: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(b) for b in boxes.tolist()}


def clipped(boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height), boxes[:, 2].clamp(0, width),
                        boxes[:, 3].clamp(0, height)], dim=1)


@settings(max_examples=15)
@given(size=image_size(28, 400))
def test_square_preset_is_the_dense_windows(size):
    width, height = size
    dense = dense_windows(LATTICE, np.zeros((height, width, 3), np.uint8), PAPER_SCALES).boxes
    # The same boxes in the same order; dense_windows' overshoot the image by float32 rounding at most.
    assert torch.equal(dense_proposals(width, height, LATTICE, "square"), clipped(dense, width, height))


def expected_proposals(width: int, height: int, scales: tuple[float, ...], ratios: tuple[float, ...]) -> list:
    """The documented rule written out from dense_windows' squares: per scale the squares, then per ratio the r and
    the 1/r boxes at each square's centre with its area, clipped; the first of equal boxes kept. Each entry is
    ``(box, its square, its width/height relative to the square's; 1 for a square)``."""
    dense = dense_windows(LATTICE, np.zeros((height, width, 3), np.uint8), scales)
    out, seen = [], set()
    for s in range(len(scales)):
        squares = dense.boxes[dense.scale_index == s].double().tolist()
        shapes = [(tuple(b), b, 1.0) for b in squares]
        for r in ratios:
            for a in (r, 1 / r):
                for x0, y0, x1, y1 in squares:
                    half_w, half_h = (x1 - x0) * math.sqrt(a) / 2, (y1 - y0) / math.sqrt(a) / 2
                    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                    shapes.append(((cx - half_w, cy - half_h, cx + half_w, cy + half_h), (x0, y0, x1, y1), a))
        for box, square, a in shapes:
            key = tuple(float(np.float32(v)) for v in (max(box[0], 0), max(box[1], 0), min(box[2], width),
                                                       min(box[3], height)))
            if key not in seen:
                seen.add(key)
                out.append((key, square, a))
    return out


@settings(max_examples=15)
@given(size=image_size(), scales=st.lists(st.sampled_from(SMALL_OBJECT_SCALES), min_size=1, max_size=3, unique=True),
       ratios=st.lists(st.sampled_from([1.5, 2.0, 3.0]), min_size=1, max_size=2, unique=True))
def test_rectangles_keep_their_squares_centre_and_area_in_the_documented_order(size, scales, ratios):
    width, height = size
    got = dense_proposals(width, height, LATTICE, ProposalConfig(tuple(scales), tuple(ratios)))
    expected = expected_proposals(width, height, tuple(scales), tuple(ratios))
    assert got.shape == (len(expected), 4)
    torch.testing.assert_close(got, torch.tensor([box for box, _, _ in expected]), rtol=0, atol=1e-3)
    for (x0, y0, x1, y1), (sx0, sy0, sx1, sy1), a in zip(got.double().tolist(), (e[1] for e in expected),
                                                          (e[2] for e in expected)):
        side_x, side_y = sx1 - sx0, sy1 - sy0
        if 0 < x0 and 0 < y0 and x1 < width and y1 < height:  # not clipped: the square's area, w/h = a
            assert (x1 - x0) * (y1 - y0) == pytest.approx(side_x * side_y, rel=1e-5)
            assert (x1 - x0) / (y1 - y0) == pytest.approx(a * side_x / side_y, rel=1e-5)
        else:  # clipped: no larger than the unclipped box
            assert x1 - x0 <= side_x * math.sqrt(a) + 1e-3 and y1 - y0 <= side_y / math.sqrt(a) + 1e-3


@settings(max_examples=30)
@given(size=image_size(), cfg=config())
def test_boxes_lie_inside_the_image_with_positive_area_and_no_duplicates(lite0, size, cfg):
    width, height = size
    boxes = dense_proposals(width, height, lite0, cfg)
    assert boxes.dtype == torch.float32 and boxes.shape[1] == 4
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert len(as_set(boxes)) == len(boxes)


@settings(max_examples=30)
@given(size=image_size(), cfg=config(), more_scales=st.lists(st.sampled_from([1.1, 5.0]), max_size=2, unique=True),
       more_ratios=st.lists(st.sampled_from([1.2, 4.0]), max_size=2, unique=True), finer=st.sampled_from([1, 2]))
def test_more_ratios_scales_or_a_finer_lattice_only_add_boxes(lite0, size, cfg, more_scales, more_ratios, finer):
    width, height = size
    bigger = ProposalConfig(cfg.scales + tuple(more_scales), tuple(more_ratios) + cfg.aspect_ratios,
                            cfg.step_divisor * finer)
    assert as_set(dense_proposals(width, height, lite0, cfg)) <= as_set(dense_proposals(width, height, lite0, bigger))


def test_presets():
    assert PROPOSAL_PRESETS["square"] == ProposalConfig(PAPER_SCALES, (), 1)
    assert PROPOSAL_PRESETS["default"] == DEFAULT_PROPOSALS == ProposalConfig(SMALL_OBJECT_SCALES, (2.0, 3.0), 2)
    assert ProposalConfig([1, 2], [2]) == ProposalConfig((1.0, 2.0), (2.0,))  # stored as tuples of floats


def test_default_is_the_default_preset(lite0):
    assert torch.equal(dense_proposals(500, 375, lite0), dense_proposals(500, 375, lite0, "default"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(scales=()), "scales is empty"),
    (dict(scales=(1.0, float("nan"))), "scales must all be finite and > 0"),
    (dict(scales=(0.0,)), "scales must all be finite and > 0"),
    (dict(scales="12"), "scales must be a sequence of numbers"),
    (dict(aspect_ratios=(2.0, -1.0)), "aspect_ratios must all be finite and > 0"),
    (dict(aspect_ratios=(float("nan"),)), "aspect_ratios must all be finite and > 0"),
    (dict(aspect_ratios=(0.0,)), "aspect_ratios must all be finite and > 0"),
    (dict(aspect_ratios=(math.inf,)), "aspect_ratios must all be finite and > 0"),
    (dict(step_divisor=0), "step_divisor must be an integer >= 1"),
    (dict(step_divisor=1.5), "step_divisor must be an integer >= 1"),
])
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProposalConfig(**kwargs)


def test_bad_preset_name_and_divisor_are_refused(lite0):
    with pytest.raises(ValueError, match=r"one of \['default', 'square'\], got 'squares'"):
        dense_proposals(500, 375, lite0, "squares")
    with pytest.raises(ValueError, match="step_divisor 3 does not divide efficientnet_lite0's window step of 64 px"):
        dense_proposals(500, 375, lite0, ProposalConfig(step_divisor=3))


def test_too_small_and_too_elongated_images_get_the_dense_modes_messages(lite0):
    # Too small for the smallest window at scale 6.4 (a 44-px side needs 45), as score_image refuses it.
    with pytest.raises(ValueError) as dense_mode:
        check_image_size(60, 44, DEFAULT_PROPOSALS.scales, lite0)
    with pytest.raises(ValueError) as ours:
        dense_proposals(60, 44, lite0)
    assert str(ours.value) == str(dense_mode.value) and "too small" in str(ours.value)
    # Too elongated for a dense plane, as dense_windows refuses it before touching a pixel.
    with pytest.raises(ValueError) as dense_mode:
        dense_windows(lite0, np.zeros((50, 12000, 3), np.uint8), PAPER_SCALES)
    with pytest.raises(ValueError) as ours:
        dense_proposals(12000, 50, lite0, "square")
    assert str(ours.value) == str(dense_mode.value) and "too elongated" in str(ours.value)
