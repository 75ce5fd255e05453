"""Triton kernels against the C++ kernel and the references, on the same tolerance table.

On a machine without a GPU they run under Triton's interpreter: ``TRITON_INTERPRET=1`` is set here, before the
kernel modules are first imported (``triton.jit`` reads it then), and the tensors stay on the CPU. The
interpreter pays per Triton operation, so cases keep images small and filters short (each tap of each box is one
trip through the kernel's inner loop); the kernels use a single large-tile config there.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("MIDLEVEL_FAST_TRITON_AUTOTUNE", "0")  # one config: one compile per shape on a GPU
pytest.importorskip("triton")

import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from midlevel_fast import PADDING_MODES, backends, crop_resize, grid, output_maps, power_mean  # noqa: E402
from tests.oracle.aggregate import output_maps_reference  # noqa: E402
import midlevel_fast.ops.aggregate.triton as tri_aggregate  # noqa: E402
import midlevel_fast.ops.crop_resize.triton as tri_crop  # noqa: E402

from tests.helpers import TOLERANCES, box_strategy, random_image  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ATOL = dict(TOLERANCES)[torch.float32]

pytestmark = pytest.mark.skipif(
    tri_crop.INTERPRETED != (DEVICE == "cpu"),
    reason="midlevel_fast.triton was imported before this module could set TRITON_INTERPRET",
)


def triton_vs_cpu(image: np.ndarray | torch.Tensor, boxes, atol: float = ATOL, **kw) -> torch.Tensor:
    """Runs the Triton kernel on DEVICE and checks it against the C++ kernel and the float64 reference."""
    img = torch.as_tensor(image)
    got = crop_resize(img.to(DEVICE), boxes, impl="triton", **kw)
    assert got.device.type == DEVICE and got.is_contiguous()
    got = got.cpu().float()
    cpu = crop_resize(img, boxes, impl="cpu", **kw)
    ref = crop_resize(img, boxes, impl="reference", **{**kw, "out_dtype": torch.float32})
    torch.testing.assert_close(got, ref, atol=atol, rtol=0)
    torch.testing.assert_close(got, cpu.float(), atol=atol, rtol=0)
    return got


def taps(extent: float, n_out: int, antialias: bool) -> int:
    return math.ceil(2 * max(extent / n_out, 1.0)) if antialias else 2


def test_backend_is_available_and_says_how():
    status = backends()["triton"]
    assert status.available
    assert ("TRITON_INTERPRET" in status.detail) == (DEVICE == "cpu")


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
def test_matches_cpu_and_reference(case, padding_mode, antialias, seed):
    h, w, c, boxes, size = case
    oh, ow = (size, size) if isinstance(size, int) else size
    # Interpreter cost: one inner-loop trip per (row tap, column tap) of each box and channel.
    work = c * sum(taps(b[3] - b[1], oh, antialias) * taps(b[2] - b[0], ow, antialias) for b in boxes)
    assume(DEVICE == "cuda" or work <= 300)
    triton_vs_cpu(random_image(h, w, c, seed), boxes, size=size, padding_mode=padding_mode, antialias=antialias)


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (13, 21)])
def test_odd_shapes_and_boxes_partly_or_wholly_outside(shape, padding_mode):
    h, w = shape
    boxes = [
        [-0.3 * w, 0.2 * h, 0.9 * w, 1.4 * h + 1],  # partly outside
        [-2.0 * w - 3, -h - 1.5, -w - 1, -0.5],  # wholly outside, up and left
        [w + 0.5, h + 0.25, 2 * w + 1, 2 * h + 2],  # wholly outside, down and right
        [0.25, 0.5, w - 0.25, h - 0.5],  # fractional, inside
        [w / 2, h / 2, w / 2, h / 2],  # degenerate
    ]
    triton_vs_cpu(random_image(h, w, 3, seed=h * w), boxes, size=(7, 5), padding_mode=padding_mode)


@pytest.mark.parametrize("antialias", [True, False])
def test_antialiased_shrink(antialias):
    # Shrink 5 on both axes: 10 taps per axis with antialias, 2 without.
    triton_vs_cpu(random_image(40, 60, 3, seed=1), [[0, 0, 60, 40], [-7.5, 3.25, 52.5, 43.25]], size=(8, 12),
                  antialias=antialias)


def test_many_boxes_and_scales_in_one_launch():
    img = random_image(36, 48, 1, seed=2)
    g = grid(48, 36)
    pick = torch.arange(0, len(g.boxes), 9)
    assert len(set(g.scale_index[pick].tolist())) >= 5
    triton_vs_cpu(img, g.boxes[pick], size=12)


def test_float_chw_channels_last_and_strided_inputs():
    base = random_image(30, 40, 3, seed=4)
    boxes = [[-5.0, 3.5, 30.25, 28.0], [10, 10, 30, 25]]
    chw = torch.from_numpy(base).permute(2, 0, 1).float() / 255.0  # channels-last memory
    triton_vs_cpu(chw, boxes, size=9, mean=0.5, std=0.25)
    triton_vs_cpu(torch.from_numpy(base)[::2, ::3], boxes, size=9)  # strided uint8 view
    triton_vs_cpu(base[:, :, 1], boxes, size=9, padding_mode="reflect")  # grey HW


def test_half_output_and_out_argument():
    img = random_image(20, 30, 3, seed=5)
    boxes = [[0, 0, 15, 15], [5, 2.5, 30, 20]]
    triton_vs_cpu(img, boxes, size=10, out_dtype=torch.float16, atol=dict(TOLERANCES)[torch.float16])
    out = torch.empty(2, 3, 10, 10, device=DEVICE)
    res = crop_resize(torch.from_numpy(img).to(DEVICE), boxes, size=10, impl="triton", out=out)
    assert res is out
    torch.testing.assert_close(out.cpu(), crop_resize(img, boxes, size=10), atol=ATOL, rtol=0)


def test_no_boxes():
    img = torch.from_numpy(random_image(5, 5, 3)).to(DEVICE)
    assert crop_resize(img, np.zeros((0, 4)), size=4, impl="triton").shape == (0, 3, 4, 4)


def test_auto_keeps_cpu_tensors_on_the_cpu_kernel():
    from midlevel_fast.ops.crop_resize import _resolve_impl

    assert _resolve_impl("auto", torch.zeros(4, 4, 3, dtype=torch.uint8)) == "cpu"
    if DEVICE == "cuda":
        # Triton serves CUDA images when the faster CUDA extension is not built.
        expected = "cuda" if backends()["cuda"].available else "triton"
        assert _resolve_impl("auto", torch.zeros(4, 4, 3, dtype=torch.uint8, device="cuda")) == expected


def random_windows(m: int, c: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes partly or wholly outside, sub-pixel and degenerate among them, and softmax probabilities."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(m, 2, generator=g) * torch.tensor([1.6 * w, 1.6 * h]) - torch.tensor([0.3 * w, 0.3 * h])
    wh = torch.rand(m, 2, generator=g) * torch.tensor([0.7 * w, 0.7 * h])
    wh[::7] *= 0.01  # covers no pixel centre, or one
    wh[::11] = 0.0
    boxes = torch.cat([xy, xy + wh], dim=1)
    return boxes, torch.softmax(3 * torch.randn(m, c, generator=g), dim=1)


@pytest.mark.parametrize("m,c,h,w", [(40, 5, 37, 53), (25, 70, 9, 40), (1, 1, 1, 1)])
def test_output_maps_match_reference(m, c, h, w):
    boxes, probs = random_windows(m, c, h, w, seed=m + c)
    got = output_maps(boxes, probs.to(DEVICE), h, w, impl="triton")
    assert got.shape == (c, h, w) and got.dtype == torch.float32
    want = output_maps_reference(boxes, probs, h, w)
    torch.testing.assert_close(got.cpu(), want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.cpu(), output_maps(boxes, probs, h, w), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("k", [5.0, 1.0, 2.5])
def test_power_mean_matches(k):
    _, probs = random_windows(50, 70, 10, 10, seed=3)
    got = power_mean(probs.to(DEVICE), k, impl="triton")
    torch.testing.assert_close(got.cpu(), power_mean(probs, k), atol=1e-7, rtol=1e-5)


def test_scores_and_maps_in_one_launch():
    boxes, probs = random_windows(30, 4, 20, 30, seed=7)
    scores, maps = tri_aggregate.aggregate_triton(probs.to(DEVICE), k=5.0, boxes=boxes, height=20, width=30)
    torch.testing.assert_close(scores.cpu(), power_mean(probs, 5.0).float(), atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(maps.cpu(), output_maps_reference(boxes, probs, 20, 30), atol=1e-6, rtol=1e-5)


def test_aggregate_edge_cases():
    probs = torch.rand(0, 3, device=DEVICE)
    assert (output_maps(torch.zeros(0, 4), probs, 4, 5, impl="triton") == 0).all()
    with pytest.raises(ValueError, match="no patches"):
        power_mean(probs, 5.0, impl="triton")
    with pytest.raises(ValueError, match="impl"):
        power_mean(torch.rand(2, 3), 5.0, impl="cuda")


# Compiles the real (not interpreted) kernels to PTX for Ampere and Hopper in a fresh process: catches what the
# interpreter lets through (type mismatches between branches, unsupported ops) on a machine without a GPU.
COMPILE_FOR_GPUS = r"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from midlevel_fast.ops.aggregate import triton as aggregate
from midlevel_fast.ops.crop_resize import triton as crop_resize

crop_sig = dict(iy_ptr="*i32", wy_ptr="*fp32", cy_ptr="*i32", ix_ptr="*i32", wx_ptr="*fp32", cx_ptr="*i32",
                stride_y="i64", stride_x="i32", stride_c="i32", out_h="i32", out_w="i32", rows_taps="i32",
                cols_taps="i32", scale0="fp32", scale1="fp32", scale2="fp32", shift0="fp32", shift1="fp32",
                shift2="fp32", C="constexpr", BLOCK_H="constexpr", BLOCK_W="constexpr")
agg_sig = dict(ranges_ptr="*i32", probs_ptr="*fp32", maps_ptr="*fp32", scores_ptr="*fp32", M="i32", C="i32",
               H="i32", W="i32", stride_pm="i32", stride_pc="i32", tiles_x="i32", n_tiles="i32", k="fp32",
               inv_m="fp32", K_INT="constexpr", BLOCK_C="constexpr", TILE_H="constexpr", TILE_W="constexpr")
for cc in (80, 90):
    target = GPUTarget("cuda", cc, 32)
    for cfg in crop_resize._CONFIGS:
        for img, out, c in (("*u8", "*fp32", 3), ("*fp32", "*fp16", 1)):
            sig = dict(img_ptr=img, out_ptr=out, **crop_sig)
            src = ASTSource(crop_resize._crop_resize_kernel.fn, sig, constexprs=dict(C=c, **cfg.kwargs))
            triton.compile(src, target=target, options=dict(num_warps=cfg.num_warps, enable_fp_fusion=True))
    for k_int in (5, 0):
        consts = dict(K_INT=k_int, BLOCK_C=aggregate.MAX_BLOCK_C, TILE_H=aggregate.TILE_H, TILE_W=aggregate.TILE_W)
        src = ASTSource(aggregate._aggregate_kernel, agg_sig, constexprs=consts)
        triton.compile(src, target=target, options=dict(enable_fp_fusion=True))
print("compiled")
"""


def test_kernels_compile_for_ampere_and_hopper(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "MIDLEVEL_FAST_TRITON_AUTOTUNE")}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    run = subprocess.run([sys.executable, "-c", COMPILE_FOR_GPUS], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and "compiled" in run.stdout, run.stderr[-3000:]
