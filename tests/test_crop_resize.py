"""The public op midlevel_fast.crop_resize: its conventions on hand-computed cases, argument validation, the out
argument, backend choice and the torch.library custom ops. The kernels' numbers are checked per backend, against
the oracle, in test_crop_resize_{cpu,torch,triton,cuda}.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast import IMAGENET_MEAN, IMAGENET_STD, backends, crop_resize
import midlevel_fast.ops.crop_resize as op_module
from midlevel_fast.ops.backends import triton_interpreted

from tests.helpers import random_image, reference

needs_cpu = pytest.mark.skipif(not backends()["cpu"].available, reason="C++ extension not built")
# Every convention test runs on the backends that run on CPU tensors.
CPU_BACKENDS = [pytest.param("cpu", marks=needs_cpu), "torch"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sampling_convention(backend):
    """Output pixel j samples x0 + (j + 0.5)(x1 - x0)/w: a 1-pixel box centred on pixel (3, 2) reads it exactly."""
    img = random_image(6, 8, 1, seed=3)
    out = crop_resize(img, [[3.0, 2.0, 4.0, 3.0]], size=1, mean=0.0, std=1.0, backend=backend)
    assert out.item() == pytest.approx(img[2, 3, 0] / 255.0, abs=1e-6)
    # A half-pixel shift lands between two pixel centres: their average.
    out = crop_resize(img, [[3.5, 2.0, 4.5, 3.0]], size=1, mean=0.0, std=1.0, backend=backend)
    assert out.item() == pytest.approx((int(img[2, 3, 0]) + int(img[2, 4, 0])) / 510.0, abs=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_padding_modes_outside_the_image(backend):
    img = np.arange(1, 6, dtype=np.uint8).reshape(1, 5, 1) * 40  # 40 80 120 160 200
    box = [[-3.0, 0.0, 8.0, 1.0]]  # 11 pixels wide: 3 left of the image, 3 right
    kw = dict(size=(1, 11), mean=0.0, std=1.0, antialias=False, backend=backend)
    edge = crop_resize(img, box, padding_mode="edge", **kw).flatten() * 255
    refl = crop_resize(img, box, padding_mode="reflect", **kw).flatten() * 255
    zero = crop_resize(img, box, padding_mode="zeros", **kw).flatten() * 255
    torch.testing.assert_close(edge, torch.tensor([40, 40, 40, 40, 80, 120, 160, 200, 200, 200, 200.]), atol=1e-3,
                               rtol=0)
    torch.testing.assert_close(refl, torch.tensor([160, 120, 80, 40, 80, 120, 160, 200, 160, 120, 80.]), atol=1e-3,
                               rtol=0)
    torch.testing.assert_close(zero, torch.tensor([0, 0, 0, 40, 80, 120, 160, 200, 0, 0, 0.]), atol=1e-3, rtol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_taps_read_real_pixels_outside_the_box(backend):
    """Taps outside the box read the image, not the padding: a box inside a constant region stays constant,
    but one ending just before an edge sees the neighbouring pixel."""
    img = np.zeros((10, 10, 1), np.uint8)
    img[:, 5:] = 255
    out = crop_resize(img, [[0.0, 0.0, 5.0, 10.0]], size=(1, 2), mean=0.0, std=1.0, backend=backend)[0, 0, 0]
    assert out[0].item() == pytest.approx(0.0, abs=1e-6)
    # Output 1 is centred at x = 3.75 with a 2.5-wide triangle: taps x = 1..5 weigh .1 .5 .9 .7 .3 (sum 2.5), so
    # pixel 5, past the box, contributes 0.3 / 2.5.
    assert math.isclose(out[1].item(), 0.12, rel_tol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_normalisation_and_grey_mean_std(backend):
    """(x/255 − mean)/std per channel; 3-value mean/std on a grey image are averaged."""
    img = np.full((4, 4, 3), (51, 102, 204), np.uint8)
    out = crop_resize(img, [[0, 0, 4, 4]], size=2, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.1), backend=backend)
    want = torch.tensor([(0.2 - 0.1) / 0.5, (0.4 - 0.2) / 0.25, (0.8 - 0.3) / 0.1]).view(3, 1, 1).expand(3, 2, 2)
    torch.testing.assert_close(out[0], want, atol=1e-5, rtol=0)
    grey = crop_resize(img[:, :, 0], [[0, 0, 4, 4]], size=2, mean=(0.0, 0.1, 0.2), std=(0.5, 0.25, 0.15),
                       backend=backend)
    torch.testing.assert_close(grey[0], torch.full((1, 2, 2), (0.2 - 0.1) / 0.3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_out_argument(backend):
    img = random_image(50, 60, 3)
    boxes = [[0, 0, 30, 30], [10, 5, 60, 50]]
    want = reference(img, boxes, size=16)
    out = torch.empty(2, 3, 16, 16)
    assert crop_resize(img, boxes, size=16, out=out, backend=backend) is out
    torch.testing.assert_close(out, want, atol=1e-4, rtol=0)
    out16 = torch.empty(2, 3, 16, 16, dtype=torch.float16)
    assert crop_resize(img, boxes, size=16, out=out16, out_dtype=torch.float16, backend=backend) is out16
    torch.testing.assert_close(out16.float(), want, atol=1e-2, rtol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@given(h=st.integers(1, 40), w=st.integers(1, 40), oh=st.integers(1, 30), ow=st.integers(1, 30),
       channels=st.sampled_from([1, 3]), out_dtype=st.sampled_from([torch.float32, torch.float16]),
       boxes=st.lists(st.tuples(*[st.floats(-20, 60)] * 4), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_channels_last_output_is_the_same_values(backend, h, w, oh, ow, channels, out_dtype, boxes, seed):
    """memory_format=torch.channels_last gives the contiguous output's values, bit for bit, laid out (N, h, w, C),
    also into an ``out`` of that layout."""
    img = random_image(h, w, channels, seed=seed)
    boxes = [[min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)] for x0, y0, x1, y1 in boxes]
    kw = dict(size=(oh, ow), out_dtype=out_dtype, backend=backend)
    want = crop_resize(img, boxes, **kw)
    got = crop_resize(img, boxes, memory_format=torch.channels_last, **kw)
    assert got.is_contiguous(memory_format=torch.channels_last) and got.shape == want.shape
    assert torch.equal(got, want)
    out = torch.empty_like(want, memory_format=torch.channels_last)
    assert crop_resize(img, boxes, memory_format=torch.channels_last, out=out, **kw) is out
    assert torch.equal(out, want)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_box_list_and_grey_2d(backend):
    img = random_image(20, 30, 1)
    assert crop_resize(img, np.zeros((0, 4)), size=8, backend=backend).shape == (0, 1, 8, 8)
    torch.testing.assert_close(crop_resize(img[:, :, 0], [[0, 0, 30, 20]], size=8, backend=backend),
                               reference(img, [[0, 0, 30, 20]], size=8), atol=1e-4, rtol=0)


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
    ({"out": torch.empty(1, 3, 8, 8), "memory_format": torch.channels_last}, "memory_format"),
    ({"out": torch.empty(1, 3, 8, 8).contiguous(memory_format=torch.channels_last)}, "memory_format"),
    ({"memory_format": torch.preserve_format}, "memory_format"),
    ({"backend": "gpu"}, "backend"),
    ({"backend": "reference"}, "backend"),
    ({"num_threads": 0}, "num_threads"),
])
def test_bad_input_raises_value_error_naming_the_argument(kwargs, match):
    args = {"image": np.zeros((10, 10, 3), np.uint8), "boxes": [[0, 0, 5, 5]], "size": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        crop_resize(**args)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_backends_on_a_cpu_image_say_why(backend):
    """Unavailable: a RuntimeError that names the backend and says why; available (a GPU, or Triton's interpreter
    for Triton): a ValueError for a CPU image, except Triton under the interpreter, which then runs."""
    img = np.zeros((4, 4, 3), np.uint8)
    status = backends()[backend]
    if not status.available:
        with pytest.raises(RuntimeError, match=backend) as err:
            crop_resize(img, [[0, 0, 4, 4]], size=2, backend=backend)
        assert status.detail in str(err.value)
    elif backend == "triton" and triton_interpreted():
        assert crop_resize(img, [[0, 0, 4, 4]], size=2, backend=backend).shape == (1, 3, 2, 2)
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            crop_resize(img, [[0, 0, 4, 4]], size=2, backend=backend)


def test_auto_picks_the_cpu_kernel_for_cpu_images_and_torch_without_it(monkeypatch):
    img = torch.zeros(4, 4, 3, dtype=torch.uint8)
    assert op_module._resolve_backend("auto", img) == ("cpu" if backends()["cpu"].available else "torch")
    monkeypatch.setattr(op_module, "cpu_ext", None)
    assert op_module._resolve_backend("auto", img) == "torch"
    assert op_module._resolve_backend("auto", img.to("meta")) == "torch"  # a device no kernel serves


def op_args(out_h: int, out_w: int, antialias: bool, padding_mode: str, out_dtype: torch.dtype,
            num_threads: int, channels_last: bool = False) -> tuple:
    return (out_h, out_w, list(IMAGENET_MEAN), list(IMAGENET_STD), antialias, padding_mode, out_dtype, channels_last,
            num_threads)


@needs_cpu
def test_opcheck():
    img = torch.from_numpy(random_image(30, 40, 3))
    boxes = torch.tensor([[-2.0, 1.0, 30.5, 29.0], [5, 5, 6, 7]], dtype=torch.float64)
    torch.library.opcheck(op_module._crop_resize_op, (img, boxes, *op_args(9, 11, True, "edge", torch.float32, 1)))
    torch.library.opcheck(op_module._crop_resize_op, (img, boxes, *op_args(9, 11, False, "zeros", torch.float16, 2)))
    channels_last = op_args(9, 11, True, "edge", torch.float32, 2, channels_last=True)
    torch.library.opcheck(op_module._crop_resize_op, (img, boxes, *channels_last))
    out = torch.empty(2, 3, 9, 11)
    torch.library.opcheck(op_module._crop_resize_out_op,
                          (img, boxes, out, *op_args(9, 11, True, "reflect", torch.float32, 1)))


@needs_cpu
def test_torch_compile_traces_the_op():
    img = torch.from_numpy(random_image(30, 40, 3))
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0]], dtype=torch.float64)

    def f(im, b):
        return op_module._crop_resize_op(im, b, *op_args(8, 8, True, "edge", torch.float16, 1)) * 2

    compiled = torch.compile(f, backend="eager", fullgraph=True)
    got = compiled(img, boxes)
    assert got.dtype == torch.float16 and torch.equal(got, f(img, boxes))


def test_a_float_hwc_image_is_told_it_should_be_chw():
    with pytest.raises(ValueError, match=r"got 100 .*looks HWC: pass image.permute\(2, 0, 1\)"):
        crop_resize(np.zeros((100, 512, 3), np.float32), [[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="got 5") as err:
        crop_resize(np.zeros((5, 8, 8), np.float32), [[0, 0, 1, 1]])
    assert "HWC" not in str(err.value)
