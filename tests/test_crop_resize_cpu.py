"""The C++ CPU kernel (midlevel_fast/ops/crop_resize/cpu.py) against the oracle, interpolate and Pillow, and
against itself across thread counts, strides and store paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from midlevel_fast import IMAGENET_MEAN, IMAGENET_STD, PADDING_MODES, backends, crop_resize, grid
from midlevel_fast.scoring.naive import crop_resize_pil

from tests.helpers import TOLERANCES, matches_reference_test, load_rgb, random_image, reference

pytestmark = pytest.mark.skipif(not backends()["cpu"].available, reason="C++ extension not built")

test_matches_reference = matches_reference_test("cpu")


@pytest.mark.parametrize("out_dtype,atol", TOLERANCES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (333, 501), (2, 600)])
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_float_chw_odd_shapes(shape, padding_mode, out_dtype, atol):
    h, w = shape
    img = torch.from_numpy(random_image(h, w, 3, seed=h * w)).permute(2, 0, 1).float() / 255.0
    boxes = [[-0.3 * w, 0.2 * h, 0.9 * w, 1.4 * h + 1], [0.25, 0.5, w - 0.25, h - 0.5]]
    got = crop_resize(img, boxes, size=(7, 5), padding_mode=padding_mode, out_dtype=out_dtype, backend="cpu")
    want = reference(img, boxes, size=(7, 5), padding_mode=padding_mode)
    torch.testing.assert_close(got.float(), want, atol=atol, rtol=0)


def test_grid_of_a_voc_sized_image_matches_reference():
    img = random_image(375, 500, 3, seed=7)
    boxes = grid(500, 375).boxes[::16]
    torch.testing.assert_close(crop_resize(img, boxes, backend="cpu"), reference(img, boxes), atol=1e-4, rtol=0)


def interior(n_in: int, n_out: int) -> slice:
    """Output indices whose antialiased taps of the whole-axis box all fall inside the image."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    ok = [j for j in range(n_out)
          if (j + 0.5) * scale - support >= -0.5 and (j + 0.5) * scale + support <= n_in + 0.5]
    return slice(ok[0], ok[-1] + 1)


@pytest.mark.parametrize("src,dst", [((375, 500), (224, 224)), ((64, 48), (150, 100)), ((333, 501), (61, 299))])
def test_whole_image_equals_interpolate_away_from_border(src, dst):
    h, w = src
    img = torch.from_numpy(random_image(h, w, 3, seed=11)).permute(2, 0, 1).float() / 255.0
    ours = crop_resize(img, [[0, 0, w, h]], size=dst, mean=0.0, std=1.0, backend="cpu")[0]
    theirs = F.interpolate(img[None], size=dst, mode="bilinear", antialias=True, align_corners=False)[0]
    rows, cols = interior(h, dst[0]), interior(w, dst[1])
    assert rows.stop - rows.start >= dst[0] - 6 and cols.stop - cols.start >= dst[1] - 6
    torch.testing.assert_close(ours[:, rows, cols], theirs[:, rows, cols], atol=3e-5, rtol=0)


def test_against_pil_loop_on_real_voc_images(voc, voc_val_ids):
    """Pillow rounds to uint8 and renormalises at the border; stated bound: mean |Δ| <= 1 grey level."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for image_id in voc_val_ids[:5]:
        img = load_rgb(voc / "JPEGImages" / f"{image_id}.jpg")
        boxes = grid(img.shape[1], img.shape[0]).boxes[::8]
        ours = (crop_resize(img, boxes, backend="cpu") * std + mean) * 255
        pil = (crop_resize_pil(img, boxes) * std + mean) * 255
        diff = (ours - pil).abs()
        assert diff.mean().item() <= 1.0, f"{image_id}: mean |Δ| = {diff.mean().item():.3f} grey levels"


def test_non_contiguous_inputs_give_identical_results():
    base = random_image(90, 120, 3, seed=5)
    boxes = torch.tensor([[-5.0, 3.5, 50.25, 70.0], [10, 10, 110, 80]], dtype=torch.float64)
    strided = base[::2, ::3]

    def run(image, b=boxes):
        return crop_resize(image, b, size=33, backend="cpu")

    want = run(np.ascontiguousarray(strided))
    assert torch.equal(run(strided), want)
    assert torch.equal(run(torch.from_numpy(base)[::2, ::3]), want)
    chw = torch.from_numpy(base).permute(2, 0, 1).float()  # channels-last memory
    assert torch.equal(run(chw), run(chw.contiguous()))
    assert torch.equal(run(base, boxes.t().contiguous().t()), run(base))
    assert torch.equal(run(base[:, ::-1]), run(base[:, ::-1].copy()))


@pytest.mark.parametrize("n_boxes", [1, 3, 40])
def test_thread_count_is_bit_identical(n_boxes):
    img = random_image(200, 300, 3, seed=9)
    boxes = grid(300, 200).boxes[:n_boxes]
    for dtype in (torch.float32, torch.float16):
        one = crop_resize(img, boxes, out_dtype=dtype, num_threads=1, backend="cpu")
        two = crop_resize(img, boxes, out_dtype=dtype, num_threads=2, backend="cpu")
        assert torch.equal(one, two)


def test_float16_output_is_the_rounded_float32_output():
    img = random_image(120, 160, 3, seed=4)
    boxes = grid(160, 120).boxes[::7]
    f32 = crop_resize(img, boxes, size=37, backend="cpu")
    f16 = crop_resize(img, boxes, size=37, out_dtype=torch.float16, backend="cpu")
    assert torch.equal(f16, f32.half())


def test_large_outputs_written_with_streaming_stores_are_identical():
    """Outputs over 64 MB take the streaming-store path; the values must not change."""
    img = random_image(375, 500, 3, seed=8)
    boxes = grid(500, 375).boxes
    whole = crop_resize(img, boxes, backend="cpu")  # 512 x 3 x 224 x 224 x 4 bytes = 308 MB
    chunks = torch.cat([crop_resize(img, boxes[i: i + 64], backend="cpu") for i in range(0, len(boxes), 64)])
    assert torch.equal(whole, chunks)

