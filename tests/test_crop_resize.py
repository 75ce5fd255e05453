"""The fused crop_resize kernel against the slow reference, interpolate, Pillow and itself."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast import IMAGENET_MEAN, IMAGENET_STD, PADDING_MODES, backends, crop_resize, grid
import midlevel_fast.ops.crop_resize as op_module
from midlevel_fast.scoring.naive import crop_resize_pil
from tests.oracle.crop_resize import crop_resize_reference, resize_matrix

from tests.helpers import TOLERANCES, box_strategy, case, load_rgb, random_image, reference

pytestmark = pytest.mark.skipif(not backends()["cpu"].available, reason="C++ extension not built")

@pytest.mark.parametrize("out_dtype,atol", TOLERANCES)
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@given(data=case(), antialias=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_reference(data, padding_mode, out_dtype, atol, antialias, seed):
    h, w, c, boxes, size = data
    img = random_image(h, w, c, seed)
    got = crop_resize(img, boxes, size=size, padding_mode=padding_mode, out_dtype=out_dtype, antialias=antialias)
    want = reference(img, boxes, size=size, padding_mode=padding_mode, antialias=antialias)
    assert got.dtype == out_dtype and got.is_contiguous()
    assert got.shape == want.shape
    torch.testing.assert_close(got.float(), want, atol=atol, rtol=0)


@pytest.mark.parametrize("out_dtype,atol", TOLERANCES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (333, 501), (2, 600)])
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_float_chw_odd_shapes(shape, padding_mode, out_dtype, atol):
    h, w = shape
    img = torch.from_numpy(random_image(h, w, 3, seed=h * w)).permute(2, 0, 1).float() / 255.0
    boxes = [[-0.3 * w, 0.2 * h, 0.9 * w, 1.4 * h + 1], [0.25, 0.5, w - 0.25, h - 0.5]]
    got = crop_resize(img, boxes, size=(7, 5), padding_mode=padding_mode, out_dtype=out_dtype)
    want = reference(img, boxes, size=(7, 5), padding_mode=padding_mode)
    torch.testing.assert_close(got.float(), want, atol=atol, rtol=0)


def test_grid_of_a_voc_sized_image_matches_reference():
    img = random_image(375, 500, 3, seed=7)
    boxes = grid(500, 375).boxes[::16]
    torch.testing.assert_close(crop_resize(img, boxes), reference(img, boxes), atol=1e-4, rtol=0)


def test_sampling_convention():
    """Output pixel j samples x0 + (j + 0.5)(x1 - x0)/w: a 1-pixel box centred on pixel (3, 2) reads it exactly."""
    img = random_image(6, 8, 1, seed=3)
    out = crop_resize(img, [[3.0, 2.0, 4.0, 3.0]], size=1, mean=0.0, std=1.0)
    assert out.item() == pytest.approx(img[2, 3, 0] / 255.0, abs=1e-6)
    # A half-pixel shift lands between two pixel centres: their average.
    out = crop_resize(img, [[3.5, 2.0, 4.5, 3.0]], size=1, mean=0.0, std=1.0)
    assert out.item() == pytest.approx((int(img[2, 3, 0]) + int(img[2, 4, 0])) / 510.0, abs=1e-6)


def test_padding_modes_outside_the_image():
    img = np.arange(1, 6, dtype=np.uint8).reshape(1, 5, 1) * 40  # 40 80 120 160 200
    box = [[-3.0, 0.0, 8.0, 1.0]]  # 11 pixels wide: 3 left of the image, 3 right
    kw = dict(size=(1, 11), mean=0.0, std=1.0, antialias=False)
    edge = crop_resize(img, box, padding_mode="edge", **kw).flatten() * 255
    refl = crop_resize(img, box, padding_mode="reflect", **kw).flatten() * 255
    zero = crop_resize(img, box, padding_mode="zeros", **kw).flatten() * 255
    torch.testing.assert_close(edge, torch.tensor([40, 40, 40, 40, 80, 120, 160, 200, 200, 200, 200.]), atol=1e-3,
                               rtol=0)
    torch.testing.assert_close(refl, torch.tensor([160, 120, 80, 40, 80, 120, 160, 200, 160, 120, 80.]), atol=1e-3,
                               rtol=0)
    torch.testing.assert_close(zero, torch.tensor([0, 0, 0, 40, 80, 120, 160, 200, 0, 0, 0.]), atol=1e-3, rtol=0)


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
    ours = crop_resize(img, [[0, 0, w, h]], size=dst, mean=0.0, std=1.0)[0]
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
        ours = (crop_resize(img, boxes) * std + mean) * 255
        pil = (crop_resize_pil(img, boxes) * std + mean) * 255
        diff = (ours - pil).abs()
        assert diff.mean().item() <= 1.0, f"{image_id}: mean |Δ| = {diff.mean().item():.3f} grey levels"


def test_non_contiguous_inputs_give_identical_results():
    base = random_image(90, 120, 3, seed=5)
    boxes = torch.tensor([[-5.0, 3.5, 50.25, 70.0], [10, 10, 110, 80]], dtype=torch.float64)
    strided = base[::2, ::3]
    want = crop_resize(np.ascontiguousarray(strided), boxes, size=33)
    assert torch.equal(crop_resize(strided, boxes, size=33), want)
    assert torch.equal(crop_resize(torch.from_numpy(base)[::2, ::3], boxes, size=33), want)
    chw = torch.from_numpy(base).permute(2, 0, 1).float()  # channels-last memory
    assert torch.equal(crop_resize(chw, boxes, size=33), crop_resize(chw.contiguous(), boxes, size=33))
    assert torch.equal(crop_resize(base, boxes.t().contiguous().t(), size=33), crop_resize(base, boxes, size=33))
    assert torch.equal(crop_resize(base[:, ::-1], boxes, size=33), crop_resize(base[:, ::-1].copy(), boxes, size=33))


@pytest.mark.parametrize("n_boxes", [1, 3, 40])
def test_thread_count_is_bit_identical(n_boxes):
    img = random_image(200, 300, 3, seed=9)
    boxes = grid(300, 200).boxes[:n_boxes]
    for dtype in (torch.float32, torch.float16):
        one = crop_resize(img, boxes, out_dtype=dtype, num_threads=1)
        two = crop_resize(img, boxes, out_dtype=dtype, num_threads=2)
        assert torch.equal(one, two)


def test_out_argument():
    img = random_image(50, 60, 3)
    boxes = [[0, 0, 30, 30], [10, 5, 60, 50]]
    out = torch.empty(2, 3, 16, 16)
    res = crop_resize(img, boxes, size=16, out=out)
    assert res is out
    assert torch.equal(out, crop_resize(img, boxes, size=16))
    out16 = torch.empty(2, 3, 16, 16, dtype=torch.float16)
    crop_resize(img, boxes, size=16, out=out16, out_dtype=torch.float16, impl="reference")
    torch.testing.assert_close(out16.float(), crop_resize(img, boxes, size=16), atol=1e-2, rtol=0)


def test_empty_box_list_and_grey_2d():
    img = random_image(20, 30, 1)
    assert crop_resize(img, np.zeros((0, 4)), size=8).shape == (0, 1, 8, 8)
    torch.testing.assert_close(crop_resize(img[:, :, 0], [[0, 0, 30, 20]], size=8),
                               crop_resize(img, [[0, 0, 30, 20]], size=8))


def test_axis_taps_agree_with_reference_matrix():
    ext = op_module.cpu_ext
    for b0, b1, n_in, n_out, pad in [(-3.3, 40.1, 37, 11, 1), (2.0, 2.0, 5, 4, 0), (-9, 30, 20, 224, 2)]:
        index, weight = ext.axis_taps(b0, b1, n_in, n_out, True, pad)
        dense = np.zeros((n_out, n_in + 1))
        np.add.at(dense, (np.arange(n_out)[:, None].repeat(index.shape[1], 1), index), weight)
        want = resize_matrix(b0, b1, n_in, n_out, True, PADDING_MODES[pad]).numpy()
        np.testing.assert_allclose(dense[:, :n_in], want, atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    ({"image": np.zeros((4, 4, 3), np.int16)}, "image"),
    ({"image": np.zeros((4, 4, 2), np.uint8)}, "image"),
    ({"image": np.zeros((4, 4, 4, 1), np.uint8)}, "image"),
    ({"image": np.zeros((0, 4, 3), np.uint8)}, "image"),
    ({"image": torch.zeros(4, 4, 3)}, "image"),
    ({"image": "cat.jpg"}, "image"),
    ({"boxes": [[0, 0, 1]]}, "boxes"),
    ({"boxes": [[0, 0, 1, 1, 1]]}, "boxes"),
    ({"boxes": [[3, 0, 1, 1]]}, "boxes"),
    ({"boxes": [[0, float("nan"), 1, 1]]}, "boxes"),
    ({"boxes": [[0, 0, float("inf"), 1]]}, "boxes"),
    ({"boxes": [[0, 0, 1e9, 1]]}, "boxes"),
    ({"size": 0}, "size"),
    ({"size": (3, -1)}, "size"),
    ({"size": 2.5}, "size"),
    ({"std": 0.0}, "std"),
    ({"mean": [0.1, 0.2]}, "mean"),
    ({"padding_mode": "wrap"}, "padding_mode"),
    ({"out_dtype": torch.float64}, "out_dtype"),
    ({"out": torch.empty(1, 3, 5, 5)}, "out"),
    ({"out": torch.empty(1, 3, 8, 8, dtype=torch.float16)}, "out"),
    ({"out": torch.empty(1, 3, 8, 16)[:, :, :, ::2]}, "out"),
    ({"impl": "gpu"}, "impl"),
    ({"num_threads": 0}, "num_threads"),
])
def test_bad_input_raises_value_error_naming_the_argument(kwargs, match):
    args = {"image": np.zeros((10, 10, 3), np.uint8), "boxes": [[0, 0, 5, 5]], "size": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        crop_resize(**args)


def test_unavailable_backends_say_why():
    for impl in ("cuda", "triton"):
        if not backends()[impl].available:
            with pytest.raises(RuntimeError, match=impl):
                crop_resize(np.zeros((4, 4, 3), np.uint8), [[0, 0, 4, 4]], size=2, impl=impl)


def test_opcheck():
    img = torch.from_numpy(random_image(30, 40, 3))
    boxes = torch.tensor([[-2.0, 1.0, 30.5, 29.0], [5, 5, 6, 7]], dtype=torch.float64)
    mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    torch.library.opcheck(op_module._crop_resize_op, (img, boxes, 9, 11, mean, std, True, 0, False, 1))
    torch.library.opcheck(op_module._crop_resize_op, (img, boxes, 9, 11, mean, std, False, 2, True, 2))
    out = torch.empty(2, 3, 9, 11)
    torch.library.opcheck(op_module._crop_resize_out_op, (img, boxes, mean, std, True, 1, 1, out))


def test_torch_compile_traces_the_op():
    img = torch.from_numpy(random_image(30, 40, 3))
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0]], dtype=torch.float64)
    mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)

    def f(im, b):
        return op_module._crop_resize_op(im, b, 8, 8, mean, std, True, 0, False, 1) * 2

    compiled = torch.compile(f, backend="eager", fullgraph=True)
    assert torch.equal(compiled(img, boxes), f(img, boxes))


def test_reference_reads_real_pixels_outside_the_box():
    """Taps outside the box read the image, not the padding: a box inside a constant region stays constant,
    but one ending just before an edge sees the neighbouring pixel."""
    img = np.zeros((10, 10, 1), np.uint8)
    img[:, 5:] = 255
    out = crop_resize(img, [[0.0, 0.0, 5.0, 10.0]], size=(1, 2), mean=0.0, std=1.0)[0, 0, 0]
    assert out[0].item() == pytest.approx(0.0, abs=1e-6)
    # Output 1 is centred at x = 3.75 with a 2.5-wide triangle: taps x = 1..5 weigh .1 .5 .9 .7 .3 (sum 2.5), so
    # pixel 5, past the box, contributes 0.3 / 2.5.
    assert math.isclose(out[1].item(), 0.12, rel_tol=1e-5)


def test_float16_output_is_the_rounded_float32_output():
    img = random_image(120, 160, 3, seed=4)
    boxes = grid(160, 120).boxes[::7]
    f32 = crop_resize(img, boxes, size=37)
    f16 = crop_resize(img, boxes, size=37, out_dtype=torch.float16)
    assert torch.equal(f16, f32.half())


def test_large_outputs_written_with_streaming_stores_are_identical():
    """Outputs over 64 MB take the streaming-store path; the values must not change."""
    img = random_image(375, 500, 3, seed=8)
    boxes = grid(500, 375).boxes
    whole = crop_resize(img, boxes)  # 512 x 3 x 224 x 224 x 4 bytes = 308 MB
    chunks = torch.cat([crop_resize(img, boxes[i: i + 64]) for i in range(0, len(boxes), 64)])
    assert torch.equal(whole, chunks)
