"""score_boxes and its square patches: geometry against an exact loop, mirror padding against numpy.pad, the
probabilities against an independent crop + forward, and bad input."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midlevel_fast.model.classifier import default_model
from midlevel_fast.scoring.boxes import patch_crops, score_boxes, square_patches
from tests.oracle.crop_resize import crop_resize_reference


def square_loop(box, context, square):
    """The patch of one box, in exact rational arithmetic."""
    x0, y0, x1, y1 = (Fraction(v) for v in box)
    c = Fraction(context)
    w, h = x1 - x0, y1 - y0
    if square:
        w = h = max(w, h)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return [float(cx - c * w / 2), float(cy - c * h / 2), float(cx + c * w / 2), float(cy + c * h / 2)]


coordinate = st.floats(-500, 1500, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(coordinate, coordinate, st.floats(0.5, 800, width=32), st.floats(0.5, 800, width=32)),
                min_size=1, max_size=6), st.floats(0.25, 4, width=32), st.booleans())
def test_square_patches_match_exact_loop(raw, context, square):
    boxes = [(x, y, x + w, y + h) for x, y, w, h in raw]
    got = square_patches(boxes, context, square)
    want = torch.tensor([square_loop(b, context, square) for b in boxes], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-9)
    sides = got[:, 2:] - got[:, :2]
    if square:
        torch.testing.assert_close(sides[:, 0], sides[:, 1], rtol=1e-12, atol=1e-9)


class Identity(torch.nn.Module):
    """A stand-in backbone whose input is the patch itself: crops of ``side`` pixels, no normalisation."""

    def __init__(self, side):
        super().__init__()
        self.input_size, self.mean, self.std = side, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


@pytest.mark.parametrize("h, w", [(7, 11), (13, 5), (1, 9), (16, 16)])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_mirror_padding_equals_numpy_reflect(h, w, data):
    """A patch of whole pixels cropped at its own size reads exactly the pixels of numpy.pad(mode="reflect"), at
    and beyond every border (several image sizes away included)."""
    rng = np.random.default_rng(h * 100 + w)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    side = data.draw(st.integers(1, 3 * max(h, w)))
    x0 = data.draw(st.integers(-2 * side - w, w + side))
    y0 = data.draw(st.integers(-2 * side - h, h + side))
    got = patch_crops(image, torch.tensor([[x0, y0, x0 + side, y0 + side]], dtype=torch.float64), Identity(side))
    pad = 3 * side + w + h
    padded = image
    for axis, n in ((0, h), (1, w)):
        # Mirroring a single row or column can only repeat it (numpy's reflect does so too, as "edge").
        widths = [(pad, pad) if a == axis else (0, 0) for a in range(3)]
        padded = np.pad(padded, widths, mode="reflect" if n > 1 else "edge")
    want = padded[y0 + pad: y0 + pad + side, x0 + pad: x0 + pad + side].astype(np.float32) / 255
    np.testing.assert_allclose(got[0].permute(1, 2, 0).numpy(), want, atol=1e-6)


def test_score_boxes_matches_independent_crop_and_forward():
    """Per box: the square patch taken from a numpy-reflect-padded copy of the image and resized by the
    crop_resize oracle, then the backbone and the head; boxes inside, across and at the borders, one huge."""
    model = default_model()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    boxes = [[10.0, 20.0, 50.0, 80.0], [-15.5, 40.0, 30.0, 95.0], [100.0, 0.0, 130.0, 90.0], [0.0, 0.0, 130.0, 90.0],
             [60.25, 30.5, 61.75, 33.0], [-100.0, -80.0, 200.0, 170.0]]
    result = score_boxes(image, boxes, model, context=1.2)
    assert result.probs.shape == (len(boxes), len(model.class_names)) and result.probs.dtype == torch.float32
    pad = 400
    padded = torch.from_numpy(np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect"))
    bb = model.backbone
    for i, box in enumerate(boxes):
        patch = square_loop(box, 1.2, True)
        np.testing.assert_allclose(result.boxes[i].numpy(), patch, rtol=1e-6, atol=1e-4)
        shifted = torch.tensor([[v + pad for v in patch]], dtype=torch.float64)
        crop = crop_resize_reference(padded, shifted, (224, 224), bb.mean, bb.std)
        with torch.no_grad():
            want = model.probabilities(bb(crop))[0]
        torch.testing.assert_close(result.probs[i], want, atol=2e-4, rtol=1e-3)
    assert [c for c, _ in result.best()] == [model.class_names[j] for j in result.probs.argmax(1).tolist()]


def test_score_boxes_calibrated_presence_and_options():
    model = default_model()
    image = np.full((60, 80, 3), 128, np.uint8)
    result = score_boxes(image, [[0, 0, 40, 30]], model)
    assert (result.presence is None) == (model.info.calibration is None)
    if result.presence is not None:
        assert result.presence.shape == result.probs.shape and ((result.presence >= 0) & (result.presence <= 1)).all()
    loose = score_boxes(image, [[0, 0, 40, 30]], model, square=False, context=2.0, padding_mode="zeros")
    torch.testing.assert_close(loose.boxes, torch.tensor([[-20.0, -15.0, 60.0, 45.0]]))


@pytest.mark.parametrize("boxes, match", [
    ([[10, 10, 10, 20]], r"boxes\[0\].*empty"),
    ([[10, 10, 5, 20]], r"box 0 .*inverted"),
    ([[0, 0, 10, 10], [float("nan"), 0, 1, 1]], r"boxes: contains NaN or infinite"),
    ([[100, 0, 120, 10]], r"boxes\[0\].*outside the 80x60 image"),
    ([[0, 0, 10]], r"shape must be \(N, 4\)"),
])
def test_score_boxes_bad_boxes(boxes, match):
    with pytest.raises(ValueError, match=match):
        score_boxes(np.zeros((60, 80, 3), np.uint8), boxes, default_model())


def test_score_boxes_bad_context():
    with pytest.raises(ValueError, match="context"):
        score_boxes(np.zeros((60, 80, 3), np.uint8), [[0, 0, 10, 10]], default_model(), context=0)
