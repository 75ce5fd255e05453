"""Box features ROI-pooled from the pyramid (:mod:`midlevel_fast.features.roi`): a dense window's feature is its
:func:`~midlevel_fast.features.dense.dense_windows` feature (Lite0 with its ImageNet weights on a real photo, and
random-weight AlexNet through its window head), SPPnet's level rule by hand, the feature layout, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from midlevel_fast.backbones.layout import WindowLayout
from midlevel_fast.features.dense import DensePlan, dense_windows
from midlevel_fast.features.roi import (RoiConfig, box_features, image_maps, pyramid_levels, pyramid_windows,
                                        roi_columns, roi_feature_dim)
from tests.helpers import random_alexnet

SCALES = (1.0, 2.0)


@pytest.fixture(scope="module")
def lite0_maps(lite0, photo):
    return image_maps(lite0, photo, scales=SCALES)


def test_a_dense_window_has_its_dense_feature_on_lite0(lite0, photo, lite0_maps):
    windows = dense_windows(lite0, photo, scales=SCALES)
    assert len(windows.boxes) > 30
    torch.testing.assert_close(pyramid_levels(lite0_maps.plan, windows.boxes), windows.scale_index)
    got = box_features(lite0_maps, windows.boxes)
    torch.testing.assert_close(got, windows.features, rtol=1e-5, atol=1e-5)
    # The same windows from the maps alone, without a second trunk pass.
    again = pyramid_windows(lite0_maps)
    torch.testing.assert_close(again.features, windows.features, rtol=1e-6, atol=1e-6)
    assert torch.equal(again.boxes, windows.boxes) and torch.equal(again.scale_index, windows.scale_index)


def test_a_dense_windows_layout_is_its_window_layout_feature(lite0, photo, lite0_maps):
    windows = dense_windows(WindowLayout(lite0), photo, scales=SCALES)
    got = box_features(lite0_maps, windows.boxes, RoiConfig(layout=True))
    assert got.shape == (len(windows.boxes), 5 * 1280) == (len(windows.boxes), roi_feature_dim(lite0, RoiConfig(True)))
    torch.testing.assert_close(got, windows.features, rtol=1e-5, atol=1e-5)


def test_the_context_part_is_the_enlarged_clipped_box(lite0_maps):
    boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0], [300.0, 100.0, 451.0, 300.0], [0.0, 0.0, 40.0, 30.0]])
    config = RoiConfig(layout=True, context=2.0)
    got = box_features(lite0_maps, boxes, config)
    assert got.shape == (3, roi_feature_dim(lite0_maps.net, config)) == (3, 6 * 1280)
    enlarged = torch.tensor([[0.0, 0.0, 160.0, 300.0], [224.5, 0.0, 451.0, 300.0], [0.0, 0.0, 60.0, 45.0]])
    torch.testing.assert_close(got[:, :1280], box_features(lite0_maps, boxes))
    torch.testing.assert_close(got[:, 5 * 1280:], box_features(lite0_maps, enlarged))


def test_the_whole_image_part_is_the_image_boxs_vector_for_every_box(lite0_maps):
    boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0], [300.0, 100.0, 451.0, 300.0]])
    config = RoiConfig(context=1.5, whole_image=True)
    got = box_features(lite0_maps, boxes, config)
    assert got.shape == (2, roi_feature_dim(lite0_maps.net, config)) == (2, 3 * 1280)
    torch.testing.assert_close(got[:, :2560], box_features(lite0_maps, boxes, RoiConfig(context=1.5)))
    whole = box_features(lite0_maps, torch.tensor([[0.0, 0.0, 451.0, 300.0]]))
    torch.testing.assert_close(got[:, 2560:], whole.expand(2, -1))


ALL = RoiConfig(layout=True, context=1.5, whole_image=True)


@pytest.mark.parametrize("part", [RoiConfig(), RoiConfig(whole_image=True), RoiConfig(layout=True),
                                  RoiConfig(context=1.5, whole_image=True), ALL])
def test_roi_columns_pick_a_parts_features_out_of_the_widest(lite0_maps, part):
    boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0], [300.0, 100.0, 451.0, 300.0], [5.0, 5.0, 60.0, 40.0]])
    cols = roi_columns(lite0_maps.net, part, ALL)
    assert torch.equal(box_features(lite0_maps, boxes, ALL)[:, cols], box_features(lite0_maps, boxes, part))


@pytest.mark.parametrize("part, whole", [(RoiConfig(layout=True), RoiConfig()),
                                         (RoiConfig(context=2.0), RoiConfig(context=1.5)),
                                         (RoiConfig(whole_image=True), RoiConfig(layout=True))])
def test_roi_columns_refuse_a_part_the_whole_lacks(lite0, part, whole):
    with pytest.raises(ValueError, match="is not a part of"):
        roi_columns(lite0, part, whole)


def test_a_dense_window_has_its_dense_feature_through_alexnets_window_head():
    backbone = random_alexnet()
    image = np.random.default_rng(0).integers(0, 256, (140, 210, 3), dtype=np.uint8)
    windows = dense_windows(backbone, image, scales=SCALES)
    got = box_features(image_maps(backbone, image, scales=SCALES), windows.boxes)
    torch.testing.assert_close(got, windows.features, rtol=1e-4, atol=1e-4)


def test_pyramid_levels_by_hand():
    # Plane areas are 1x and 3x the image's: a 224 x 224 box is at home on plane 0, a 224 x 75 on plane 1; a
    # 112 x 224 box is 25088 px below 224² on plane 0 and 25088 above it on plane 1, and the tie goes to plane 0.
    plan = DensePlan(height=300, width=300, step_cells=2, step_px=64, input_size=224, planes=[(300, 300), (300, 900)])
    boxes = torch.tensor([[0.0, 0, 224, 224], [0, 0, 224 / 3, 224], [0, 0, 224, 112], [0, 0, 300, 300]])
    assert pyramid_levels(plan, boxes).tolist() == [0, 1, 0, 0]


def test_no_boxes_give_no_rows(lite0_maps):
    assert box_features(lite0_maps, torch.zeros(0, 4)).shape == (0, 1280)
    assert box_features(lite0_maps, np.zeros((0, 4)), RoiConfig(context=1.5)).shape == (0, 2560)


@pytest.mark.parametrize("boxes, match", [
    (torch.zeros(3), r"\(N, 4\)"),
    (torch.zeros(2, 5), r"\(N, 4\)"),
    (torch.tensor([[0.0, 0, float("nan"), 10]]), "finite"),
    (torch.tensor([[0.0, 0, float("inf"), 10]]), "finite"),
    (torch.tensor([[20.0, 0, 10, 10]]), "x1 >= x0"),
    (torch.tensor([[0.0, 0, 10, 10], [500, 10, 600, 50]]), "overlap the 451x300 image"),
    (torch.tensor([[-50.0, -50, 0, 10]]), "overlap the 451x300 image"),
    (torch.tensor([[10.0, 10, 10, 50]]), "overlap the 451x300 image"),
])
def test_box_features_refuse_bad_boxes(lite0_maps, boxes, match):
    with pytest.raises(ValueError, match=match):
        box_features(lite0_maps, boxes)


@pytest.mark.parametrize("kwargs, match", [({"context": 1.0}, "context"), ({"sampling_ratio": 0}, "sampling")])
def test_roi_config_refuses_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RoiConfig(**kwargs)
