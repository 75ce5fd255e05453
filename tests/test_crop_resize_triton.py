"""The Triton crop_resize kernel (midlevel_fast/ops/crop_resize/triton.py) against the oracle and the C++ kernel,
on the same tolerance table.

On a machine without a GPU it runs under Triton's interpreter on CPU tensors (tests/conftest.py sets
TRITON_INTERPRET before this module is imported; the tests request the ``triton_device`` fixture). The
interpreter pays per Triton operation, so cases keep images small and filters short (each tap of each box is one
trip through the kernel's inner loop); the kernel uses a single large-tile config there.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from midlevel_fast import PADDING_MODES, backends, crop_resize, grid
import midlevel_fast.ops.crop_resize as op_module

from tests.helpers import TOLERANCES, assert_matches_reference, box_strategy, compile_for_gpus, random_image, reference

pytest.importorskip("triton")

ATOL = dict(TOLERANCES)[torch.float32]


def triton_vs_cpu(device: str, image: np.ndarray | torch.Tensor, boxes, atol: float = ATOL, **kw) -> None:
    """Runs the Triton kernel on ``device`` and checks it against the float64 oracle and the C++ kernel."""
    img = torch.as_tensor(image)
    got = crop_resize(img.to(device), boxes, backend="triton", **kw)
    assert got.device.type == device
    assert_matches_reference(got, img, boxes, atol, **kw)
    if backends()["cpu"].available:
        torch.testing.assert_close(got.cpu(), crop_resize(img, boxes, backend="cpu", **kw), atol=atol, rtol=0)


def taps(extent: float, n_out: int, antialias: bool) -> int:
    return math.ceil(2 * max(extent / n_out, 1.0)) if antialias else 2


def test_backend_is_available_and_says_how(triton_device):
    status = backends()["triton"]
    assert status.available
    assert ("TRITON_INTERPRET" in status.detail) == (triton_device == "cpu")


@st.composite
def small_case(draw):
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    c = draw(st.sampled_from([1, 3]))
    boxes = draw(st.lists(box_strategy(w, h), min_size=1, max_size=3))
    size = draw(st.sampled_from([1, 7, (5, 9), (12, 16)]))
    return h, w, c, boxes, size


@settings(max_examples=40)
@given(case=small_case(), padding_mode=st.sampled_from(PADDING_MODES), antialias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_matches_cpu_and_reference(triton_device, case, padding_mode, antialias, seed):
    h, w, c, boxes, size = case
    oh, ow = (size, size) if isinstance(size, int) else size
    # Interpreter cost: one inner-loop trip per (row tap, column tap) of each box and channel.
    work = c * sum(taps(b[3] - b[1], oh, antialias) * taps(b[2] - b[0], ow, antialias) for b in boxes)
    assume(triton_device == "cuda" or work <= 300)
    triton_vs_cpu(triton_device, random_image(h, w, c, seed), boxes, size=size, padding_mode=padding_mode,
                  antialias=antialias)


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (13, 21)])
def test_odd_shapes_and_boxes_partly_or_wholly_outside(triton_device, shape, padding_mode):
    h, w = shape
    boxes = [
        [-0.3 * w, 0.2 * h, 0.9 * w, 1.4 * h + 1],  # partly outside
        [-2.0 * w - 3, -h - 1.5, -w - 1, -0.5],  # wholly outside, up and left
        [w + 0.5, h + 0.25, 2 * w + 1, 2 * h + 2],  # wholly outside, down and right
        [0.25, 0.5, w - 0.25, h - 0.5],  # fractional, inside
        [w / 2, h / 2, w / 2, h / 2],  # degenerate
    ]
    triton_vs_cpu(triton_device, random_image(h, w, 3, seed=h * w), boxes, size=(7, 5), padding_mode=padding_mode)


@pytest.mark.parametrize("antialias", [True, False])
def test_antialiased_shrink(triton_device, antialias):
    # Shrink 5 on both axes: 10 taps per axis with antialias, 2 without.
    triton_vs_cpu(triton_device, random_image(40, 60, 3, seed=1), [[0, 0, 60, 40], [-7.5, 3.25, 52.5, 43.25]],
                  size=(8, 12), antialias=antialias)


def test_many_boxes_and_scales_in_one_launch(triton_device):
    img = random_image(36, 48, 1, seed=2)
    g = grid(48, 36)
    pick = torch.arange(0, len(g.boxes), 9)
    assert len(set(g.scale_index[pick].tolist())) >= 5
    triton_vs_cpu(triton_device, img, g.boxes[pick], size=12)


def test_float_chw_channels_last_and_strided_inputs(triton_device):
    base = random_image(30, 40, 3, seed=4)
    boxes = [[-5.0, 3.5, 30.25, 28.0], [10, 10, 30, 25]]
    chw = torch.from_numpy(base).permute(2, 0, 1).float() / 255.0  # channels-last memory
    triton_vs_cpu(triton_device, chw, boxes, size=9, mean=0.5, std=0.25)
    triton_vs_cpu(triton_device, torch.from_numpy(base)[::2, ::3], boxes, size=9)  # strided uint8 view
    triton_vs_cpu(triton_device, base[:, :, 1], boxes, size=9, padding_mode="reflect")  # grey HW


def test_half_output_and_out_argument(triton_device):
    img = random_image(20, 30, 3, seed=5)
    boxes = [[0, 0, 15, 15], [5, 2.5, 30, 20]]
    triton_vs_cpu(triton_device, img, boxes, size=10, out_dtype=torch.float16, atol=dict(TOLERANCES)[torch.float16])
    out = torch.empty(2, 3, 10, 10, device=triton_device)
    res = crop_resize(torch.from_numpy(img).to(triton_device), boxes, size=10, backend="triton", out=out)
    assert res is out
    torch.testing.assert_close(out.cpu(), reference(img, boxes, size=10), atol=ATOL, rtol=0)


def test_channels_last_output_through_one_copy(triton_device):
    """The Triton kernel writes (N, C, h, w); a channels_last request gets the same values in that layout."""
    img = torch.from_numpy(random_image(20, 30, 3, seed=6)).to(triton_device)
    boxes = [[0, 0, 15, 15], [5, 2.5, 30, 20]]
    want = crop_resize(img, boxes, size=(7, 9), backend="triton")
    got = crop_resize(img, boxes, size=(7, 9), backend="triton", memory_format=torch.channels_last)
    assert got.is_contiguous(memory_format=torch.channels_last) and torch.equal(got, want)


def test_no_boxes(triton_device):
    img = torch.from_numpy(random_image(5, 5, 3)).to(triton_device)
    assert crop_resize(img, np.zeros((0, 4)), size=4, backend="triton").shape == (0, 3, 4, 4)


def test_auto_keeps_cpu_tensors_on_the_cpu_kernel(triton_device):
    if backends()["cpu"].available:
        assert op_module._resolve_backend("auto", torch.zeros(4, 4, 3, dtype=torch.uint8)) == "cpu"
    if triton_device == "cuda":
        # Triton serves CUDA images when the faster CUDA extension is not built.
        expected = "cuda" if backends()["cuda"].available else "triton"
        assert op_module._resolve_backend("auto", torch.zeros(4, 4, 3, dtype=torch.uint8, device="cuda")) == expected


COMPILE_CROP_RESIZE = r"""
from midlevel_fast.ops.crop_resize import triton as crop_resize

sig = dict(iy_ptr="*i32", wy_ptr="*fp32", cy_ptr="*i32", ix_ptr="*i32", wx_ptr="*fp32", cx_ptr="*i32",
           stride_y="i64", stride_x="i32", stride_c="i32", out_h="i32", out_w="i32", rows_taps="i32",
           cols_taps="i32", scale0="fp32", scale1="fp32", scale2="fp32", shift0="fp32", shift1="fp32",
           shift2="fp32", C="constexpr", BLOCK_H="constexpr", BLOCK_W="constexpr")
for target in TARGETS:
    for cfg in crop_resize._CONFIGS:
        for img, out, c in (("*u8", "*fp32", 3), ("*fp32", "*fp16", 1)):
            src = ASTSource(crop_resize._crop_resize_kernel.fn, dict(img_ptr=img, out_ptr=out, **sig),
                            constexprs=dict(C=c, **cfg.kwargs))
            triton.compile(src, target=target, options=dict(num_warps=cfg.num_warps, enable_fp_fusion=True))
"""


def test_kernel_compiles_for_ampere_and_hopper(tmp_path):
    compile_for_gpus(COMPILE_CROP_RESIZE, tmp_path)
