"""The CUDA C++ kernel (midlevel_fast/ops/crop_resize/cuda.py): built and importable wherever nvcc was (CI has
it), clear errors without a GPU, and, on a GPU, the same numbers as the oracle and the C++ CPU kernel on the same
tolerance table."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midlevel_fast import IMAGENET_MEAN, IMAGENET_STD, PADDING_MODES, backends, crop_resize, grid
from midlevel_fast.ops.backends import cuda_ext
import midlevel_fast.ops.crop_resize as op_module
import midlevel_fast.ops.crop_resize.cuda as launcher_module
from midlevel_fast.ops.crop_resize.schema import CropResizeParams, image_view

from tests.helpers import TOLERANCES, assert_matches_reference, case, random_image, reference

HAS_GPU = torch.cuda.is_available() and backends()["cuda"].available
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA device (or torch without CUDA)")
needs_ext = pytest.mark.skipif(cuda_ext is None, reason="CUDA extension not built (no nvcc at install time)")
no_gpu = pytest.mark.skipif(HAS_GPU, reason="checks the behaviour without a CUDA device")


def test_extension_is_built_when_nvcc_is_there():
    if os.environ.get("MIDLEVEL_FAST_CUDA") == "0" or shutil.which("nvcc") is None:
        pytest.skip("no nvcc, or MIDLEVEL_FAST_CUDA=0: the CUDA extension is not expected")
    assert cuda_ext is not None, backends()["cuda"].detail


def test_backends_lists_cuda_and_says_why_not():
    status = backends()["cuda"]
    if cuda_ext is None:
        assert not status.available and "not built" in status.detail
    elif not HAS_GPU:
        assert not status.available and "no CUDA device" in status.detail
    else:
        assert status.available
    if cuda_ext is not None:
        assert "sm_" in cuda_ext.compiled_targets()


@needs_ext
@no_gpu
def test_calling_without_a_device_raises_a_clear_error():
    assert cuda_ext.device_count()[0] == 0
    # Null pointers on purpose: the device check comes first, before anything is dereferenced.
    image = image_view(torch.zeros(4, 4, 3, dtype=torch.uint8)).native(cuda_ext, 0)
    params = CropResizeParams(2, 2, (1.0,) * 3, (1.0,) * 3, True, "edge", torch.float32, False, 1).native(cuda_ext)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        cuda_ext.crop_resize(image, 0, 1, params, 0, max_row_scale=1.0, max_col_scale=1.0, device=0, stream=0)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        crop_resize(np.zeros((4, 4, 3), np.uint8), [[0, 0, 4, 4]], size=2, backend="cuda")


def gpu_vs_cpu(image, boxes, out_dtype=torch.float32, **kw) -> None:
    """Runs the CUDA kernel and checks it against the float64 oracle and the C++ CPU kernel."""
    atol = dict(TOLERANCES)[out_dtype]
    img = torch.as_tensor(image)
    got = crop_resize(img.cuda(), boxes, backend="cuda", out_dtype=out_dtype, **kw)
    assert got.is_cuda
    assert_matches_reference(got, img, boxes, atol, out_dtype=out_dtype, **kw)
    torch.testing.assert_close(got.cpu(), crop_resize(img, boxes, backend="cpu", out_dtype=out_dtype, **kw),
                               atol=atol, rtol=0)


@needs_gpu
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@settings(max_examples=20)
@given(data=case(), antialias=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_cpu_and_reference(data, padding_mode, out_dtype, antialias, seed):
    h, w, c, boxes, size = data
    gpu_vs_cpu(random_image(h, w, c, seed), boxes, out_dtype, size=size, padding_mode=padding_mode,
               antialias=antialias)


@needs_gpu
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (333, 501)])
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_float_chw_odd_shapes_and_wide_filters(shape, padding_mode):
    h, w = shape
    img = torch.from_numpy(random_image(h, w, 3, seed=h * w)).permute(2, 0, 1).float() / 255.0
    # The last box shrinks ~40x: more taps than a tile stages, so its tiles take the direct path.
    boxes = [[-0.3 * w, 0.2 * h, 0.9 * w, 1.4 * h + 1], [0.25, 0.5, w - 0.25, h - 0.5], [-w, -h, 2 * w, 2 * h]]
    gpu_vs_cpu(img, boxes, size=(7, 5), padding_mode=padding_mode)


@needs_gpu
def test_paper_grid_stepd_inputs_and_out():
    base = random_image(375, 500, 3, seed=7)
    boxes = grid(500, 375).boxes
    gpu_vs_cpu(base, boxes)
    gpu_vs_cpu(torch.from_numpy(base)[::2, ::3], boxes[::7], size=33)
    gpu_vs_cpu(base[:, :, 0], boxes[::7], size=(17, 29), padding_mode="reflect")
    out = torch.empty(len(boxes), 3, 224, 224, device="cuda")
    assert crop_resize(torch.from_numpy(base).cuda(), boxes, backend="cuda", out=out) is out


def both_paths_boxes(h: int, w: int, oh: int, ow: int) -> list[list[float]]:
    """Boxes that, in one launch at output size (oh, ow), take both paths of the kernel (tiles of 16 output rows
    and 64 columns, at most 8 taps per axis staged, 48 KiB of shared memory sized from the largest scales): tiles
    that fit run the shared-memory pipeline, the others the direct one."""
    return [
        [3.3, 2.1, 20.7, 15.2],  # enlarged: 2 taps, few slots
        [-10.0, -5.0, -10.0 + 1.7 * ow, -5.0 + 1.7 * oh],  # the paper grid's largest shrink, across the border
        [0.5, -2.0, w - 0.5, -2.0 + 3.5 * oh],  # rows shrink 3.5: 7 row taps, ~60 slots per tile
        [-w, -h, 2.0 * w, -h + 10.0 * oh],  # rows shrink 10: 20 row taps, more than a tile stages (direct)
        [-w, 3.0, 3.0 * w, 20.0],  # columns shrink ~4w/ow: more column taps than staged (direct)
        [-0.6 * w, 1.0, 0.3 * w, 30.0],  # columns across the left border: reflect reads a folded range
        [w + 5.0, h + 5.0, w + 30.0, h + 40.0],  # outside the image: zero rows with padding_mode="zeros"
        [5.0, 5.0, 5.0, 5.0],  # zero-size
    ]


@needs_gpu
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("layout", ["uint8_hwc", "float_chw"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("antialias", [True, False])
def test_tiled_and_direct_paths_in_one_launch(antialias, padding_mode, channels, layout, out_dtype):
    # Without antialias a shrunk box has 2 taps over a wide range of rows: the tiled path then also filters the
    # slots no tap reads, when they fit.
    h, w, oh, ow = 61, 47, 45, 37  # partial tiles on both axes, two tiles of rows
    img = random_image(h, w, channels, seed=channels)
    image = img if layout == "uint8_hwc" else torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    gpu_vs_cpu(image, both_paths_boxes(h, w, oh, ow), out_dtype, size=(oh, ow), padding_mode=padding_mode,
               antialias=antialias)


@needs_gpu
@pytest.mark.parametrize("max_row_scale", [0.0, float("inf"), None])
@pytest.mark.parametrize("max_col_scale", [0.0, float("inf"), None])
def test_any_shared_memory_bound_gives_the_same_result(monkeypatch, max_row_scale, max_col_scale):
    """The host sizes shared memory from the largest row and column scales; understated ones (tiles that no longer
    fit take the direct path) or overstated ones (no slot, or every tile gets the whole budget) change the speed
    only."""
    real = cuda_ext
    bounds = {k: v for k, v in (("max_row_scale", max_row_scale), ("max_col_scale", max_col_scale)) if v is not None}

    class Bound:
        @staticmethod
        def crop_resize(*args, **kw):
            return real.crop_resize(*args, **{**kw, **bounds})

    monkeypatch.setattr(launcher_module, "cuda_ext", Bound)
    img = random_image(61, 47, 3, seed=11)
    boxes = both_paths_boxes(61, 47, 45, 37) + grid(47, 61).boxes.tolist()
    for padding_mode in PADDING_MODES:
        gpu_vs_cpu(img, boxes, size=(45, 37), padding_mode=padding_mode)


@needs_gpu
def test_runs_on_the_current_stream():
    img = torch.from_numpy(random_image(60, 80, 3, seed=8)).cuda()
    boxes = [[0, 0, 80, 60], [10, 5, 30, 25]]
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        out = crop_resize(img, boxes, size=32, backend="cuda")
    side.synchronize()
    torch.testing.assert_close(out.cpu(), reference(img.cpu(), boxes, size=32), atol=1e-4, rtol=0)


@needs_gpu
def test_auto_picks_a_gpu_backend_and_the_op_dispatches_on_cuda():
    img = torch.from_numpy(random_image(30, 40, 3)).cuda()
    # HAS_GPU implies the CUDA extension is available: it is the faster backend, so auto picks it over Triton.
    assert op_module._resolve_backend("auto", img) == "cuda"
    boxes = torch.tensor([[-2.0, 1.0, 30.5, 29.0], [5, 5, 6, 7]], dtype=torch.float64)
    args = (img, boxes, 9, 11, list(IMAGENET_MEAN), list(IMAGENET_STD), True, "edge", torch.float32, 1)
    got = op_module._crop_resize_op(*args)
    torch.testing.assert_close(got.cpu(), reference(img.cpu(), boxes, size=(9, 11)), atol=1e-4, rtol=0)
    torch.library.opcheck(op_module._crop_resize_op, args)


@needs_gpu
def test_cuda_and_triton_agree():
    pytest.importorskip("triton")
    img = torch.from_numpy(random_image(120, 90, 3, seed=9)).cuda()
    boxes = grid(90, 120).boxes
    a = crop_resize(img, boxes, size=64, backend="cuda")
    b = crop_resize(img, boxes, size=64, backend="triton")
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
