"""The batched patch path (:mod:`midlevel_fast.features.batched`): chunking changes nothing, and each vector is the
backbone's vector of its patch as the oracle crops it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from midlevel_fast import grid, load_model
from midlevel_fast.features.batched import batched_features, batched_patches

from tests.helpers import random_image, reference


@pytest.fixture(scope="module")
def lite0_backbone():
    return load_model("imagenet").backbone


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return random_image(90, 130, 3, seed=3)


@pytest.fixture(scope="module")
def boxes() -> torch.Tensor:
    # Five boxes, one of them leaving the image (edge padding), one thin.
    return torch.tensor([[0, 0, 90, 90], [40, 0, 130, 90], [-10, 5, 60, 75], [20, 30, 50, 40], [100, 60, 130, 90]],
                        dtype=torch.float32)


def test_features_are_the_backbone_on_the_oracle_crops(lite0_backbone, image, boxes):
    bb = lite0_backbone
    with torch.inference_mode():
        got = batched_features(bb, image, boxes, batch=2)
        want = bb(reference(image, boxes, size=bb.input_size, mean=bb.mean, std=bb.std))
    assert got.shape == (5, bb.feature_dim)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("batch", [1, 3, 5, 64])
def test_chunking_changes_nothing(lite0_backbone, image, boxes, batch):
    """Chunks of ``batch`` share one crop buffer: a chunk must never see the previous chunk's patches."""
    with torch.inference_mode():
        one_pass = batched_features(lite0_backbone, image, boxes, batch=len(boxes))
        chunked = batched_features(lite0_backbone, image, boxes, batch=batch)
    torch.testing.assert_close(chunked, one_pass, atol=1e-5, rtol=1e-5)


def test_batched_patches_follow_the_grid(lite0_backbone, image):
    scales = [1.0, 1.6]
    with torch.inference_mode():
        feats, boxes, scale_index = batched_patches(lite0_backbone, image, scales, 0.5, batch=4)
        g = grid(130, 90, scales, 0.5)
        assert torch.equal(boxes, g.boxes) and torch.equal(scale_index, g.scale_index)
        torch.testing.assert_close(feats, batched_features(lite0_backbone, image, g.boxes))
    assert feats.dtype == torch.float32 and feats.shape == (len(g.boxes), lite0_backbone.feature_dim)
