"""Class activation maps (midlevel_fast/baselines/cam.py) and the whole-image views they share with the probe
(midlevel_fast/baselines/probe.py): the 1×1-conv probe against the probe on pooled features (linearity), the
upsampling geometry, shapes, and the views' sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from midlevel_fast.backbones import efficientnet_lite0
from midlevel_fast.scoring.points import map_points
from midlevel_fast.baselines.cam import cam_cells, check_cam_backbone, class_activation_maps, upsample_cells
from midlevel_fast.baselines.probe import whole_image_cells, whole_image_features, whole_image_view_size
from tests.helpers import random_alexnet, skimage_photo


@pytest.fixture(scope="module")
def lite0():
    return efficientnet_lite0()


def probe_layer(dim: int, classes: int, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    layer = torch.nn.Linear(dim, classes)
    with torch.no_grad():
        layer.bias.normal_()
    return layer


def test_cam_mean_is_the_probe_on_the_pooled_vector():
    cells = torch.randn(1, 32, 5, 7, dtype=torch.float32)
    layer = probe_layer(32, 4)
    cam = cam_cells(cells, layer)
    assert cam.shape == (4, 5, 7)
    torch.testing.assert_close(cam.mean(dim=(1, 2)), layer(cells.mean(dim=(2, 3)))[0].detach(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("short_side", [None, 256])
def test_pooled_features_are_the_mean_of_the_cells_and_the_cam_mean_the_probe(lite0, tmp_path, short_side):
    """On the real trunk: whole_image_features (the probe's inputs) equal the cells' mean, so the CAM's mean over
    its cells equals the probe's logits on the image (squashed: the backbone's own pooled vector, batched)."""
    photo = skimage_photo("chelsea")
    path = tmp_path / "chelsea.png"
    Image.fromarray(photo).save(path)
    pooled = whole_image_features(lite0, [path, path], short_side=short_side)
    cells = whole_image_cells(lite0, photo, short_side)
    torch.testing.assert_close(pooled[0], cells.mean(dim=(2, 3))[0], atol=1e-4, rtol=1e-4)
    layer = probe_layer(lite0.feature_dim, 3)
    torch.testing.assert_close(cam_cells(cells, layer).mean(dim=(1, 2)), layer(pooled)[0].detach(), atol=1e-3,
                               rtol=1e-4)
    maps = class_activation_maps(lite0, layer, photo, short_side)
    assert maps.shape == (3, *photo.shape[:2]) and maps.dtype == torch.float32


def test_squashed_view_upsamples_as_bilinear_align_corners_false(lite0):
    cam = torch.randn(2, 7, 7)
    got = upsample_cells(cam, lite0, (224, 224), (37, 53))
    want = F.interpolate(cam[None], size=(37, 53), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("view,image", [((448, 597), (375, 500)), ((224, 224), (300, 200)), ((448, 448), (99, 99))])
def test_one_hot_cell_peaks_at_its_centre_in_the_image(lite0, view, image):
    """Cell (u, v) of a view whose trunk grid starts at ``grid_offset`` has its centre at view pixel
    ``off + 32·(v + 0.5)``; the upsampled map peaks on the image pixel holding that point, scaled to the image."""
    off_y, off_x = lite0.grid_offset(*view)
    cells = (-(-view[0] // 32), -(-view[1] // 32))
    u, v = cells[0] // 2, cells[1] - 2
    cam = torch.zeros(1, *cells)
    cam[0, u, v] = 1.0
    heat = upsample_cells(cam, lite0, view, image)
    assert heat.shape == (1, *image)
    cx = (off_x + 32 * (v + 0.5)) * image[1] / view[1]
    cy = (off_y + 32 * (u + 0.5)) * image[0] / view[0]
    x, y = map_points(heat[0]).tolist()
    assert abs(x - cx) <= 0.5 and abs(y - cy) <= 0.5
    assert heat.max() <= 1.0 + 1e-6 and heat.min() >= 0.0


def test_constant_beyond_the_outer_centres(lite0):
    cam = torch.arange(7, dtype=torch.float32).repeat(7, 1)[None]  # value = column index
    heat = upsample_cells(cam, lite0, (224, 224), (70, 70))
    # 70 px for 7 cells: the first centre is at x = 5, the last at 65; the image's first/last 5 columns are outside.
    torch.testing.assert_close(heat[0, :, :5], torch.zeros(70, 5), atol=1e-6, rtol=0)
    torch.testing.assert_close(heat[0, :, -5:], torch.full((70, 5), 6.0), atol=1e-5, rtol=0)
    assert heat[0, 0, 5] > 0 and heat[0, 0, 64] < 6


def test_view_sizes_and_checks(lite0):
    assert whole_image_view_size(lite0, 375, 500) == (224, 224)
    assert whole_image_view_size(lite0, 375, 500, 448) == (448, 597)
    assert whole_image_view_size(lite0, 500, 375, 448) == (597, 448)
    with pytest.raises(ValueError, match="short_side"):
        whole_image_view_size(lite0, 10, 10, 0)
    with pytest.raises(ValueError, match="tiling the input"):
        check_cam_backbone(random_alexnet())
    assert whole_image_cells(lite0, np.zeros((375, 500, 3), np.uint8), 448).shape == (1, 1280, 14, 19)
