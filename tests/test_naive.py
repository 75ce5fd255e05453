"""The naive per-patch loop (:mod:`midlevel_fast.scoring.naive`) against the oracle: inside the image, where
Pillow's border handling plays no part, a PIL crop is the oracle's crop."""
from __future__ import annotations

import pytest
import torch

from midlevel_fast import load_model
from midlevel_fast.scoring.naive import crop_resize_pil, patch_probabilities_naive

from tests.helpers import IMAGENET_STD, random_image, reference

# Boxes well inside a 60×80 image whose filters never reach the border, shrinking and enlarging.
INTERIOR = torch.tensor([[10.0, 10.0, 50.0, 40.0], [20.5, 12.25, 31.5, 23.25], [30, 20, 70, 50]])


def test_float_channels_equal_the_oracle():
    img = random_image(60, 80, 3, seed=2)
    got = crop_resize_pil(img, INTERIOR, size=24, float_channels=True)
    assert got.shape == (3, 3, 24, 24) and got.dtype == torch.float32
    torch.testing.assert_close(got, reference(img, INTERIOR, size=24), atol=1e-4, rtol=0)


def test_uint8_patches_are_rounded_to_grey_levels():
    img = random_image(60, 80, 3, seed=2)
    got = crop_resize_pil(img, INTERIOR, size=24)
    # Pillow rounds to uint8 after each of its two passes (rows, then columns): at most a grey level in all,
    # 1 / 255 / std in normalised units.
    bound = 1 / 255 / min(IMAGENET_STD) + 1e-4
    assert (got - reference(img, INTERIOR, size=24)).abs().max().item() <= bound


def test_grey_image_and_no_boxes():
    grey = random_image(60, 80, 1, seed=4)[:, :, 0]
    got = crop_resize_pil(grey, INTERIOR[:1], size=8, mean=[0.5], std=[0.25], float_channels=True)
    torch.testing.assert_close(got, reference(grey, INTERIOR[:1], size=8, mean=[0.5], std=[0.25]), atol=1e-4, rtol=0)
    assert crop_resize_pil(random_image(5, 5, 3), torch.zeros(0, 4), size=7).shape == (0, 3, 7, 7)


def test_patch_probabilities_are_the_model_on_the_oracle_crops():
    model = load_model("imagenet")
    bb = model.backbone
    img = random_image(300, 400, 3, seed=5)
    boxes = torch.tensor([[40.0, 30.0, 264.0, 254.0], [150.0, 60.0, 250.0, 160.0]])
    with torch.inference_mode():
        got = patch_probabilities_naive(model, img, boxes)
        want = model.probabilities(bb(reference(img, boxes, size=bb.input_size, mean=bb.mean, std=bb.std)))
    assert got.shape == (2, 1000)
    torch.testing.assert_close(got.sum(1), torch.ones(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("size", [1, 33])
def test_output_size(size):
    assert crop_resize_pil(random_image(20, 30, 3), INTERIOR[:1] / 4, size=size).shape == (1, 3, size, size)
