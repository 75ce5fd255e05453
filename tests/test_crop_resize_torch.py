"""The pure-torch backend (midlevel_fast/ops/crop_resize/torch_backend.py) against the oracle, on the tolerance
table the kernels meet."""
from __future__ import annotations

import pytest
import torch

from midlevel_fast import PADDING_MODES, crop_resize, grid
from midlevel_fast.ops.crop_resize.torch_backend import CHUNK

from tests.helpers import matches_reference_test, random_image, reference

test_matches_reference = matches_reference_test("torch", max_examples=30)


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_float_chw_strided_and_boxes_outside(padding_mode):
    base = torch.from_numpy(random_image(31, 45, 3, seed=2))
    chw = base.permute(2, 0, 1).float() / 255.0  # channels-last memory
    boxes = [[-0.3 * 45, 0.2 * 31, 0.9 * 45, 1.4 * 31 + 1], [50.0, 40.0, 70.0, 60.0], [3.5, 3.5, 3.5, 3.5]]
    for image in (chw, base[::2, ::3]):
        got = crop_resize(image, boxes, size=(7, 5), padding_mode=padding_mode, mean=0.5, std=0.25, backend="torch")
        want = reference(image, boxes, size=(7, 5), padding_mode=padding_mode, mean=0.5, std=0.25)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_more_boxes_than_a_chunk_and_many_scales():
    img = random_image(60, 80, 3, seed=6)
    boxes = grid(80, 60).boxes
    assert len(boxes) > 2 * CHUNK
    torch.testing.assert_close(crop_resize(img, boxes, size=12, backend="torch"), reference(img, boxes, size=12),
                               atol=1e-4, rtol=0)
