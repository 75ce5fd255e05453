"""Window layouts (Backbone.window_layout, midlevel_fast/backbones/layout.py): quadrant means against slicing
loops, the wrapped backbone's features begin with the mid-level vector, and a head's layout box regression is
what score_image reads."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midlevel_fast import load_model, score_image
from midlevel_fast.backbones import get_backbone
from midlevel_fast.backbones.layout import WindowLayout
from midlevel_fast.model.classifier import PatchClassifier
from midlevel_fast.model.box_regression import BoxRegression
from midlevel_fast.features.dense import dense_windows
from midlevel_fast.scoring.detections import detect
from tests.helpers import random_alexnet


@pytest.fixture(scope="module")
def lite0():
    return get_backbone("efficientnet_lite0")


def layout_reference(cells: torch.Tensor, k: int, step: int) -> torch.Tensor:
    """Per window (rows, cols taken every ``step`` cells), the means of its four quadrants of ceil(k/2) cells."""
    side = (k + 1) // 2
    rows, cols = (cells.shape[1] - k) // step + 1, (cells.shape[2] - k) // step + 1
    out = torch.zeros(4 * cells.shape[0], rows, cols, dtype=torch.float64)
    for u in range(rows):
        for v in range(cols):
            parts = [cells[:, u * step + a: u * step + a + side, v * step + b: v * step + b + side]
                     .double().mean((1, 2)) for a in (0, k - side) for b in (0, k - side)]
            out[:, u, v] = torch.cat(parts)
    return out


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["lite0", "alexnet"]), st.integers(0, 5), st.integers(0, 5), st.integers(1, 3))
def test_window_layout_matches_the_slicing_loop(which, extra_h, extra_w, step):
    bb = _BACKBONES[which]()
    k = bb.window
    cells = torch.randn(1, 3, k + extra_h, k + extra_w)
    got = bb.window_layout(cells, step)[0]
    torch.testing.assert_close(got.double(), layout_reference(cells[0], k, step), atol=1e-5, rtol=1e-5)
    assert got.shape[1:] == bb.window_head(torch.randn(1, bb.cell_dim, k + extra_h, k + extra_w), step).shape[2:]


# Built once per module: hypothesis examples cannot take function-scoped fixtures.
_BACKBONES = {"lite0": functools.cache(lambda: get_backbone("efficientnet_lite0")),
              "alexnet": functools.cache(random_alexnet)}


def test_wrapped_features_begin_with_the_mid_level_vector(lite0):
    layout = WindowLayout(lite0)
    assert layout.name == "efficientnet_lite0+layout" and layout.feature_dim == 1280 + 4 * 1280
    img = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    with torch.inference_mode():
        plain, rich = dense_windows(lite0, img, [1.0, 2.0]), dense_windows(layout, img, [1.0, 2.0])
        patches = torch.randn(2, 3, 224, 224)
        assert torch.equal(layout(patches)[:, :1280], lite0(patches))
    assert torch.equal(rich.boxes, plain.boxes) and torch.equal(rich.features[:, :1280], plain.features)


def test_score_image_reads_the_layout_for_a_layout_regression():
    model = load_model()
    if model.info.box_regression is None:
        pytest.skip("this build ships no head with a box regression")
    torch.manual_seed(0)
    dim = WindowLayout(model.backbone).feature_dim
    reg = BoxRegression(torch.randn(20, 4, dim) * 1e-4, torch.zeros(20, 4), {"features": "layout"})
    info = model.info.__class__(**{**model.info.__dict__, "box_regression": reg})
    layout_model = PatchClassifier(model.backbone, model.head, info)
    img = (np.random.default_rng(1).random((100, 140, 3)) * 255).astype(np.uint8)
    plain = score_image(img, model, precision="fp32", detection_threshold=0.01)
    rich = score_image(img, layout_model, precision="fp32", detection_threshold=0.01)
    torch.testing.assert_close(rich.probs, plain.probs)  # the head reads the mid-level part only
    with torch.inference_mode():
        feats = dense_windows(WindowLayout(model.backbone), img, info.scales).features
    assert rich.detections == detect(rich.windows, rich.probs, model.class_names, rich.image_size, feats, reg,
                                     threshold=0.01)


def test_a_regression_of_the_wrong_size_is_refused(lite0):
    model = load_model("imagenet")
    bad = BoxRegression(torch.zeros(1000, 4, 1281), torch.zeros(1000, 4), {"features": "layout"})
    with pytest.raises(ValueError, match=r"reads 1281 layout features; efficientnet_lite0 gives 6400"):
        PatchClassifier(lite0, model.head, model.info.__class__(**{**model.info.__dict__, "box_regression": bad}))
    with pytest.raises(ValueError, match="features must be one of"):
        BoxRegression(torch.zeros(1, 4, 3), torch.zeros(1, 4), {"features": "pixels"})
