"""Triton crop_resize: the contract of :func:`midlevel_fast.crop_resize`, every box (any scale) in one launch.

Program ``(n, r·C + c, q)`` writes a ``BLOCK_H × BLOCK_W`` tile (rows ``r``, columns ``q``) of channel ``c`` of
box ``n``. It reads the box's tap tables (:mod:`midlevel_fast.ops.crop_resize.taps`, ``[box][tap][output]``, so a
tile's table reads are contiguous), filters each tapped source row horizontally and accumulates the rows with their
vertical weights: the CPU kernel's order of operations, so both round alike. Loops run over the box's own tap
counts, so small boxes of a many-scale batch cost no more than alone. Output rows are stored contiguously.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from midlevel_fast.ops.backends import triton_interpreted
from midlevel_fast.ops.crop_resize.schema import CropResizeParams, image_view
from midlevel_fast.ops.crop_resize.taps import kernel_setup

# triton.jit picks the interpreter when this module is imported; the tile choice follows the same decision.
INTERPRETED = triton_interpreted()
# MIDLEVEL_FAST_TRITON_AUTOTUNE=0 (read at import) keeps the first GPU config: tests then compile one variant per
# shape instead of timing five.
AUTOTUNE = os.environ.get("MIDLEVEL_FAST_TRITON_AUTOTUNE", "1") != "0"

if INTERPRETED:
    # The interpreter runs each program as numpy ops: few large tiles are fastest, and there is nothing to time.
    _CONFIGS = [triton.Config({"BLOCK_H": 32, "BLOCK_W": 64}, num_warps=4)]
else:
    _CONFIGS = [
        triton.Config({"BLOCK_H": bh, "BLOCK_W": bw}, num_warps=nw)
        for bh, bw, nw in ((16, 64, 4), (8, 64, 4), (8, 128, 4), (16, 128, 8), (32, 64, 8))
    ][: None if AUTOTUNE else 1]


@triton.autotune(configs=_CONFIGS, key=["out_h", "out_w", "C"])
@triton.jit
def _crop_resize_kernel(
    img_ptr, out_ptr,
    iy_ptr, wy_ptr, cy_ptr, ix_ptr, wx_ptr, cx_ptr,
    stride_y, stride_x, stride_c,
    out_h, out_w, rows_taps, cols_taps,
    scale0, scale1, scale2, shift0, shift1, shift2,
    C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) % C
    rows = (tl.program_id(1) // C) * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
    row_ok = rows < out_h
    col_ok = cols < out_w

    cy = tl.load(cy_ptr + n)
    cx = tl.load(cx_ptr + n)
    iy_ptr += n * rows_taps * out_h + rows
    wy_ptr += n * rows_taps * out_h + rows
    ix_ptr += n * cols_taps * out_w + cols
    wx_ptr += n * cols_taps * out_w + cols
    plane_ptr = img_ptr + c * stride_c

    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for ty in range(0, cy):
        r = tl.load(iy_ptr + ty * out_h, mask=row_ok, other=-1)
        w_row = tl.load(wy_ptr + ty * out_h, mask=row_ok, other=0.0)
        row_base = plane_ptr + r.to(tl.int64)[:, None] * stride_y
        h = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
        for tx in range(0, cx):
            col = tl.load(ix_ptr + tx * out_w, mask=col_ok, other=-1)
            w_col = tl.load(wx_ptr + tx * out_w, mask=col_ok, other=0.0)
            # Index -1 is a zero-padded tap: masked, it reads 0 like the CPU kernel's zero pixel.
            tap_ok = (r >= 0)[:, None] & (col >= 0)[None, :]
            v = tl.load(row_base + col.to(tl.int64)[None, :] * stride_x, mask=tap_ok, other=0)
            h += w_col[None, :] * v.to(tl.float32)
        acc += w_row[:, None] * h

    scale = tl.where(c == 0, scale0, tl.where(c == 1, scale1, scale2))
    shift = tl.where(c == 0, shift0, tl.where(c == 1, shift1, shift2))
    res = acc * scale + shift
    dst = out_ptr + ((n * C + c) * out_h + rows[:, None]) * out_w + cols[None, :]
    tl.store(dst, res.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def crop_resize_triton(image: torch.Tensor, boxes: torch.Tensor, params: CropResizeParams,
                       out: torch.Tensor) -> torch.Tensor:
    """Writes the crops of validated ``boxes`` (float64 ``(N, 4)``, best on the CPU) of ``image`` (uint8 HWC or
    float32 CHW, any strides, on a CUDA device or, under the interpreter, the CPU) into ``out`` (contiguous
    ``params.out_shape(N)`` of ``params.out_dtype`` on the image's device) and returns ``out``."""
    n = boxes.shape[0]
    if n == 0:
        return out
    view = image_view(image)
    c, out_h, out_w = view.channels, params.out_h, params.out_w
    setup = kernel_setup(boxes, view, params, image.device)
    rows, cols = setup.rows, setup.cols
    scale = setup.scale + [0.0] * (3 - c)
    shift = setup.shift + [0.0] * (3 - c)

    def grid(meta: dict) -> tuple[int, int, int]:
        return n, triton.cdiv(out_h, meta["BLOCK_H"]) * c, triton.cdiv(out_w, meta["BLOCK_W"])

    _crop_resize_kernel[grid](
        image, out,
        rows.index, rows.weight, rows.count, cols.index, cols.weight, cols.count,
        view.stride_y, view.stride_x, view.stride_c,
        out_h, out_w, rows.index.shape[1], cols.index.shape[1],
        *scale, *shift,
        C=c,
        # Fused multiply-adds, as the C++ kernel is compiled; explicit because Triton's default is changing.
        enable_fp_fusion=True,
    )
    return out
