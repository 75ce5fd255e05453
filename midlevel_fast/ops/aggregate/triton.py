"""Triton dense aggregation: image scores (power mean) and output maps of many windows in one launch.

Same contract as :func:`midlevel_fast.ops.aggregate.power_mean` and :func:`midlevel_fast.ops.aggregate.output_maps`:
``score(c) = 1/M Σ_i p_ic^k``; a pixel is covered by a window when its centre lies in ``[x0, x1) × [y0, y1)``,
and its map value is the mean probability of the windows covering it (0 where none does).

No per-window raster is ever written. Program ``(t, b)`` owns a ``TILE_H × TILE_W`` pixel tile ``t`` and a block
``b`` of ``BLOCK_C`` classes: it walks over all windows, skips those that miss its tile with one scalar test, adds
the probabilities of the others over the covered pixels of the tile in registers, counts the coverage, divides
and writes its tile of the ``(C, H, W)`` maps once. Gathering per tile instead of scattering per window needs
no atomics, so the result does not depend on scheduling. One extra row of programs (``t`` = number of tiles)
reduces ``p^k`` over the windows for its class block instead. The covered pixel ranges of the windows are
computed once beforehand with :func:`midlevel_fast.ops.aggregate.schema.covered_range`, the rule the CPU path
uses.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from midlevel_fast.ops.aggregate.schema import check_power_mean, covered_range
from midlevel_fast.ops.backends import triton_interpreted

INTERPRETED = triton_interpreted()
# The interpreter pays per program and per operation, not per element: larger tiles there.
TILE_H, TILE_W = (32, 32) if INTERPRETED else (16, 16)
MAX_BLOCK_C = 64 if INTERPRETED else 32
# Integer exponents up to this are computed by repeated multiplication (exact, and what k = 5 needs).
MAX_INT_K = 16


@triton.jit
def _power(p, k, K_INT: tl.constexpr):
    if K_INT > 0:
        r = p
        for _ in tl.static_range(K_INT - 1):
            r = r * p
    else:
        # The clamp only keeps log2 away from 0; those lanes are replaced by 0 anyway.
        r = tl.where(p > 0, tl.exp2(k * tl.log2(tl.maximum(p, 1e-30))), 0.0)
    return r


@triton.jit
def _aggregate_kernel(
    ranges_ptr, probs_ptr, maps_ptr, scores_ptr,
    M, C, H, W, stride_pm, stride_pc,
    tiles_x, n_tiles, k, inv_m,
    K_INT: tl.constexpr, BLOCK_C: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
):
    t = tl.program_id(0)
    classes = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    class_ok = classes < C
    if t == n_tiles:
        power_sum = tl.zeros((BLOCK_C,), dtype=tl.float32)
        for m in range(0, M):
            p = tl.load(probs_ptr + m * stride_pm + classes * stride_pc, mask=class_ok, other=0.0)
            power_sum += _power(p.to(tl.float32), k, K_INT)
        tl.store(scores_ptr + classes, power_sum * inv_m, mask=class_ok)
    else:
        ty0 = (t // tiles_x) * TILE_H
        tx0 = (t % tiles_x) * TILE_W
        pix = tl.arange(0, TILE_H * TILE_W)
        y = ty0 + pix // TILE_W
        x = tx0 + pix % TILE_W
        total = tl.zeros((BLOCK_C, TILE_H * TILE_W), dtype=tl.float32)
        count = tl.zeros((TILE_H * TILE_W,), dtype=tl.float32)
        for m in range(0, M):
            x0 = tl.load(ranges_ptr + 4 * m)
            x1 = tl.load(ranges_ptr + 4 * m + 1)
            y0 = tl.load(ranges_ptr + 4 * m + 2)
            y1 = tl.load(ranges_ptr + 4 * m + 3)
            if (x0 < tx0 + TILE_W) & (x1 > tx0) & (y0 < ty0 + TILE_H) & (y1 > ty0):
                inside = ((x >= x0) & (x < x1) & (y >= y0) & (y < y1)).to(tl.float32)
                p = tl.load(probs_ptr + m * stride_pm + classes * stride_pc, mask=class_ok, other=0.0)
                total += p.to(tl.float32)[:, None] * inside[None, :]
                count += inside
        maps = tl.where(count[None, :] > 0.5, total / tl.maximum(count, 1.0)[None, :], 0.0)
        dst = maps_ptr + classes.to(tl.int64)[:, None] * H * W + (y * W + x)[None, :]
        tl.store(dst, maps, mask=class_ok[:, None] & ((y < H) & (x < W))[None, :])


def aggregate_triton(probs: torch.Tensor, k: float | None = None, boxes: torch.Tensor | None = None,
                     height: int = 0, width: int = 0) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(scores (C,), maps (C, height, width))`` float32 on ``probs``' device, in one launch.

    ``probs (M, C)`` lives on a CUDA device or, under the interpreter, the CPU. Scores are computed when ``k`` is
    given, maps when ``boxes (M, 4)`` is; a result not asked for is ``None``. ``boxes`` and ``probs`` are
    validated as by :mod:`midlevel_fast.ops.aggregate`; ``probs`` and ``k`` raise ``ValueError`` as there.
    """
    if k is not None:
        check_power_mean(probs, k)
    dev = probs.device
    m, c = probs.shape
    scores = torch.empty(c, dtype=torch.float32, device=dev) if k is not None else None
    maps = torch.empty((c, height, width), dtype=torch.float32, device=dev) if boxes is not None else None
    if m == 0 or c == 0 or (scores is None and maps is None):
        return scores, (maps.zero_() if maps is not None else None)
    tiles_x = triton.cdiv(width, TILE_W)
    n_tiles = 0
    if boxes is not None:
        n_tiles = triton.cdiv(height, TILE_H) * tiles_x
        b = boxes.to(device=dev, dtype=torch.float64)
        x0, x1 = covered_range(b[:, 0], b[:, 2], width)
        y0, y1 = covered_range(b[:, 1], b[:, 3], height)
        ranges = torch.stack([x0, x1, y0, y1], dim=1).to(torch.int32).contiguous()
    # A result not asked for gets a valid dummy pointer: the programs that would use it are not launched.
    dummy = torch.empty(4, dtype=torch.int32, device=dev)
    if boxes is None:
        ranges = dummy
    k_int = int(k) if k is not None and float(k).is_integer() and 1 <= k <= MAX_INT_K else 0
    block_c = min(triton.next_power_of_2(c), MAX_BLOCK_C)
    grid = (n_tiles + (1 if scores is not None else 0), triton.cdiv(c, block_c))
    _aggregate_kernel[grid](
        ranges, probs,
        dummy.view(torch.float32) if maps is None else maps,
        dummy.view(torch.float32) if scores is None else scores,
        m, c, height, width, probs.stride(0), probs.stride(1),
        tiles_x, n_tiles, float(k) if k is not None else 1.0, 1.0 / m,
        K_INT=k_int, BLOCK_C=block_c, TILE_H=TILE_H, TILE_W=TILE_W,
        enable_fp_fusion=True,  # explicit: Triton's default is changing
    )
    return scores, maps
