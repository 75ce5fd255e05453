"""The dense sliding window (:mod:`midlevel_fast.features.dense`): its geometry worked by hand, its windows against
the grid and against the crops they stand for, on EfficientNet-Lite0 and random-weight AlexNet."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from midlevel_fast import grid, load_model
from midlevel_fast.ops.crop_resize import crop_resize
from midlevel_fast.features.dense import (MAX_DENSE_PIXELS, default_window_step, dense_length, dense_planes,
                                        dense_windows, window_boxes)

from tests.helpers import random_alexnet, skimage_photo


@pytest.fixture(scope="module")
def lite0_backbone():
    return load_model("imagenet").backbone


@pytest.fixture(scope="module")
def alexnet_backbone():
    return random_alexnet()


def test_default_window_step_by_hand():
    # floor(K/3): Lite0's K = 7 and AlexNet's K = 6 both step 2 cells; a step is never below one cell.
    assert default_window_step(7) == 2 and default_window_step(6) == 2 and default_window_step(9) == 3
    assert default_window_step(7, 0.5) == 3 and default_window_step(2) == 1 and default_window_step(1, 0.1) == 1


def test_dense_length_by_hand():
    # 375 px with a patch of 375/2 = 187.5 becomes 448 px, rounded to 224 + 64·m: m = round(224/64) = 4 -> 480.
    assert dense_length(375, 187.5, 224, 64) == 480
    assert dense_length(500, 375, 224, 64) == 288  # 298.67 -> 224 + 64·round(1.17) = 288
    assert dense_length(100, 200, 224, 64) == 224  # never below one window


def test_window_boxes_by_hand():
    boxes = window_boxes(2, 3, 64, 224, (0, -16), scale_y=0.5, scale_x=2.0)
    want = [[x * 2.0, y * 0.5, (x + 224) * 2.0, (y + 224) * 0.5] for y in (0, 64) for x in (-16, 48, 112)]
    torch.testing.assert_close(boxes, torch.tensor(want, dtype=torch.float32))


def test_dense_windows_tile_the_image_edge_to_edge(alexnet_backbone):
    img = np.random.default_rng(0).integers(0, 256, (120, 333, 3), dtype=np.uint8)
    d = dense_windows(alexnet_backbone, img, scales=[1.0, 1.6, 4.0])
    assert d.features.shape == (len(d.boxes), 4096)
    for i in range(3):
        b = d.boxes[d.scale_index == i].double()
        assert b[:, 0].min() == pytest.approx(0, abs=1e-3) and b[:, 1].min() == pytest.approx(0, abs=1e-3)
        assert b[:, 2].max() == pytest.approx(333, abs=1e-2) and b[:, 3].max() == pytest.approx(120, abs=1e-2)
        side = 120 / [1.0, 1.6, 4.0][i]
        # Windows are squares of the grid's side, up to the per-axis rounding of the resized plane.
        assert ((b[:, 2] - b[:, 0]) / side - 1).abs().max() < 0.1
        assert ((b[:, 3] - b[:, 1]) / side - 1).abs().max() < 0.1


def test_dense_planes_are_the_whole_image_resized_per_scale(alexnet_backbone):
    """Each plane is the whole image resized to dense_length of each side (224 + 64·m for AlexNet), normalised."""
    img = np.random.default_rng(1).integers(0, 256, (120, 333, 3), dtype=np.uint8)
    scales = [1.0, 1.6]
    planes = dense_planes(alexnet_backbone, img, scales)
    assert len(planes) == 2
    for plane, scale in zip(planes, scales):
        side = 120 / scale
        size = (dense_length(120, side, 224, 64), dense_length(333, side, 224, 64))
        assert plane.shape == (1, 3, *size) and plane.is_contiguous(memory_format=torch.channels_last)
        want = crop_resize(img, [[0, 0, 333, 120]], size=size, mean=alexnet_backbone.mean, std=alexnet_backbone.std)
        torch.testing.assert_close(plane, want, rtol=0, atol=0)


def test_dense_density_matches_the_paper(lite0_backbone):
    g = grid(500, 375)
    d = dense_windows(lite0_backbone, np.zeros((375, 500, 3), np.uint8))
    assert 0.9 * len(g.boxes) <= len(d.boxes) <= 1.8 * len(g.boxes)


def test_bad_window_step_and_oversized_planes(alexnet_backbone):
    img = np.zeros((40, 60, 3), np.uint8)
    with pytest.raises(ValueError, match="window_step"):
        dense_windows(alexnet_backbone, img, scales=[1.0], window_step=0)
    # A 1×4000 strip at λ = 1 needs a 224 × 896000 plane.
    assert 224 * dense_length(4000, 1, 224, 64) > MAX_DENSE_PIXELS
    with pytest.raises(ValueError, match="mode='batched'"):
        dense_windows(alexnet_backbone, np.zeros((1, 4000, 3), np.uint8), scales=[1.0])


# Photos that travel with the test dependencies (scikit-image), so the test is the same with or without VOC.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("which", ["alexnet", "lite0"])
def test_dense_window_reproduces_its_crop_at_an_interior_aligned_position(which, photo, alexnet_backbone,
                                                                          lite0_backbone):
    """At scale factor 1 (patch side 224, plane 480 = 224 + 64·4), window (2, 2) covers pixels [128, 352)²; the
    per-patch vector of exactly that crop matches the dense one up to border context: cells near the crop's
    border see zero padding where the dense trunk sees the neighbours. AlexNet's context is small, so its own
    crop is the best of the ±32-px shifts at cosine > 0.95. Lite0 (851-px receptive field, global average of all
    7×7 cells) sees much more context: on these photos its own crop reaches 0.73-0.85 and a shift can match as
    well, so the bound is that its own crop beats every corner window's crop (which shares 43 % of its pixels)
    by a clear margin."""
    bb = alexnet_backbone if which == "alexnet" else lite0_backbone
    img = np.asarray(Image.fromarray(skimage_photo(photo)).convert("RGB").resize((480, 480), Image.BILINEAR))
    lam = 480 / 224
    assert dense_length(480, 480 / lam, 224, 64) == 480
    d = dense_windows(bb, img, scales=[lam])
    idx = 2 * 5 + 2
    torch.testing.assert_close(d.boxes[idx], torch.tensor([128.0, 128.0, 352.0, 352.0]), atol=1e-3, rtol=0)
    shifts = torch.tensor([[dx, dy, dx, dy] for dy in (-32, 0, 32) for dx in (-32, 0, 32)], dtype=torch.float32)
    corners = d.boxes[[0, 4, 20, 24]]
    crops = crop_resize(img, torch.cat([d.boxes[idx] + shifts, corners]), size=224, mean=bb.mean, std=bb.std)
    with torch.inference_mode():
        cos = torch.nn.functional.cosine_similarity(bb(crops), d.features[idx][None], dim=1)
    own, shifted, corner = cos[4].item(), cos[:9], cos[9:]
    if which == "alexnet":
        assert own > 0.95, f"{photo}: cosine {own:.3f} at the window's own box"
        assert shifted.argmax().item() == 4, f"{photo}: a shifted crop matches better: {shifted.tolist()}"
    else:
        assert own > 0.7, f"{photo}: cosine {own:.3f} at the window's own box"
        assert own > corner.max().item() + 0.1, f"{photo}: own {own:.3f}, corner windows {corner.tolist()}"
