"""ROI align (Mask R-CNN) in torch: the bilinear samples of a box's bins averaged, as ``torchvision.ops.roi_align``
defines them, computed without a loop over boxes.

Bilinear sampling is separable: a sample's four taps are the product of two taps along y and two along x, and a
sample outside the map reads zero along whichever axis it leaves. So the output of bin ``(i, j)`` of box ``n`` is
``Σ_r Σ_k Wy[n, i, r] · maps[b, :, r, k] · Wx[n, j, k]``, with ``Wy (N, h, H)`` and ``Wx (N, w, W)`` the averaged
taps of the bin's samples along each axis. Two matrix products then do all boxes of one image: the map times
``Wx`` (one GEMM over every box), then ``Wy`` per box (a batched product).
"""
from __future__ import annotations

import torch

# Bytes of the largest intermediate (``C·H`` rows by ``w`` columns per box) in one chunk of boxes.
CHUNK_BYTES = 64 * 2**20
# More samples than this along one axis of one box (a box of about that many map cells with sampling_ratio=0)
# would need more memory for its tap weights than any map here has cells: refused.
MAX_SAMPLES_PER_AXIS = 2**20


def axis_weights(start: torch.Tensor, end: torch.Tensor, length: int, bins: int, sampling_ratio: int,
                 aligned: bool) -> torch.Tensor:
    """``(n, bins, length)``: for each box spanning ``[start, end)`` map cells on an axis of ``length`` cells, each
    bin's taps averaged over its samples, by torchvision's rules: sample ``s`` of bin ``i`` at
    ``start' + i·bin + (s + 0.5)·bin/g`` with ``start' = start - 0.5`` if ``aligned``, ``bin = (end - start)/bins``
    (at least ``1/bins`` unless ``aligned``), ``g = sampling_ratio`` or, for 0, ``ceil(bin)``; a sample beyond
    ``[-1, length]`` reads zero, one in ``[-1, 0]`` reads cell 0, one past the last cell centre reads the last
    cell. Computed in the dtype of ``start``, as torchvision computes in its input's."""
    offset = 0.5 if aligned else 0.0
    start, end = start - offset, end - offset
    size = end - start if aligned else (end - start).clamp(min=1.0)
    bin_size = size / bins
    grid = (torch.full_like(size, sampling_ratio) if sampling_ratio > 0 else torch.ceil(size / bins)).clamp(min=0)
    most = int(grid.max().item()) if grid.numel() else 0
    if most * bins > MAX_SAMPLES_PER_AXIS:
        raise ValueError(f"boxes: a box needs {most * bins:,} samples along one axis (more than "
                         f"{MAX_SAMPLES_PER_AXIS:,}); it is far larger than the map: clip boxes to the map first")
    n = start.shape[0]
    steps = torch.arange(max(most, 1), dtype=start.dtype, device=start.device)
    i = torch.arange(bins, dtype=start.dtype, device=start.device)
    # (n, bins, most): the positions of every bin's samples, masked where a box has fewer than `most`.
    pos = (start[:, None, None] + i[None, :, None] * bin_size[:, None, None]
           + (steps[None, None, :] + 0.5) * (bin_size / grid.clamp(min=1))[:, None, None])
    used = (steps[None, None, :] < grid[:, None, None]) & (pos >= -1.0) & (pos <= length)
    pos = pos.clamp(min=0.0)
    low = pos.floor().long()
    last = low >= length - 1
    low = torch.where(last, length - 1, low)
    high = torch.where(last, low, low + 1)
    # Past the last cell centre both taps are the last cell, so their weights add up to one whatever the fraction.
    frac = pos - low.to(pos.dtype)
    scale = used.to(pos.dtype) / grid.clamp(min=1)[:, None, None]
    weights = torch.zeros(n, bins, length, dtype=start.dtype, device=start.device)
    weights.scatter_add_(2, torch.cat([low, high], dim=2).clamp(0, length - 1),
                         torch.cat([(1 - frac) * scale, frac * scale], dim=2))
    return weights


def check_roi_args(maps: torch.Tensor, boxes: torch.Tensor, batch_index: torch.Tensor,
                   output_size: tuple[int, int], sampling_ratio: int) -> None:
    """``ValueError`` naming the first argument of :func:`roi_align` that it refuses, and why."""
    if maps.dim() != 4 or not maps.is_floating_point():
        raise ValueError(f"maps must be a floating (B, C, H, W) tensor, got {maps.dtype} {tuple(maps.shape)}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) as (x0, y0, x1, y1) in map cells, got {tuple(boxes.shape)}")
    if batch_index.shape != (boxes.shape[0],) or batch_index.is_floating_point():
        raise ValueError(f"batch_index must be an integer (N,) tensor with N = {boxes.shape[0]} boxes, got "
                         f"{batch_index.dtype} {tuple(batch_index.shape)}")
    if len(output_size) != 2 or min(output_size) < 1:
        raise ValueError(f"output_size must be (h, w) with both >= 1, got {output_size}")
    if sampling_ratio < 0:
        raise ValueError(f"sampling_ratio must be >= 0 (0: adaptive, ceil(bin size)), got {sampling_ratio}")
    if not len(boxes):
        return
    if not torch.isfinite(boxes).all():
        raise ValueError(f"boxes must be finite; box {int((~torch.isfinite(boxes)).any(1).nonzero()[0])} is not")
    if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        bad = int(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).nonzero()[0])
        raise ValueError(f"boxes need x1 >= x0 and y1 >= y0; box {bad} is {boxes[bad].tolist()}")
    if batch_index.min() < 0 or batch_index.max() >= maps.shape[0]:
        raise ValueError(f"batch_index must be in [0, {maps.shape[0]}) (one per map), got values "
                         f"{int(batch_index.min())}..{int(batch_index.max())}")


def roi_align(maps: torch.Tensor, boxes: torch.Tensor, batch_index: torch.Tensor, output_size: tuple[int, int],
              sampling_ratio: int = 0, aligned: bool = True) -> torch.Tensor:
    """``(N, C, h, w)``: box ``n`` of ``boxes (N, 4)`` (``(x0, y0, x1, y1)`` in map cells, cell ``k`` covering
    ``[k, k + 1)``) on map ``batch_index[n]`` of ``maps (B, C, H, W)``, cut into ``output_size = (h, w)`` bins,
    each the mean of its ``g × g`` bilinear samples: ``torchvision.ops.roi_align(maps, rois, output_size,
    spatial_scale=1, sampling_ratio, aligned)`` (:func:`axis_weights` for the rules; ``aligned=True`` puts cell
    ``k``'s centre at ``k + 0.5``, so a box ``[k, k + h)`` with ``sampling_ratio=1`` reads cells ``k..k+h-1``
    exactly). Zero-width boxes are allowed (adaptive sampling gives them zero, as torchvision).

    In the dtype and on the device of ``maps``. Memory besides the output: boxes are taken in chunks whose
    largest intermediate is at most ``max(CHUNK_BYTES, one box's)`` bytes, one box's being ``H·W·itemsize`` for
    one bin and ``C·H·w·itemsize`` otherwise (at most two such are held at once), plus the chunk's tap weights,
    ``(h + w)·(max(H, W) + 6·g)`` elements per box with ``g`` the largest sample count per bin.
    Raises ``ValueError`` for a bad shape or dtype, non-finite boxes, ``x1 < x0`` or ``y1 < y0``, a
    ``batch_index`` outside the maps, ``output_size`` below 1, ``sampling_ratio`` below 0, or a box needing more
    than :data:`MAX_SAMPLES_PER_AXIS` samples along an axis.
    """
    h, w = (int(v) for v in output_size)
    check_roi_args(maps, boxes, batch_index, (h, w), sampling_ratio)
    n_boxes, (_, channels, height, width) = boxes.shape[0], maps.shape
    out = maps.new_zeros(n_boxes, channels, h, w)
    if not n_boxes:
        return out
    boxes = boxes.to(maps.device, maps.dtype)
    batch_index = batch_index.to(maps.device)
    # One bin (a box's mean, what the box features ask for): the outer product of the two axes' weights against
    # the map in one GEMM. More bins: the separable pair, which never forms the (h·w, H·W) weights.
    single = h * w == 1
    per_box = (height * width if single else channels * height * w) * maps.element_size()
    chunk = max(1, CHUNK_BYTES // per_box)
    for b in batch_index.unique().tolist():
        flat = maps[b].reshape(channels * height, width)
        picked = (batch_index == b).nonzero()[:, 0]
        for part in picked.split(chunk):
            box, n = boxes[part], len(part)
            wy = axis_weights(box[:, 1], box[:, 3], height, h, sampling_ratio, aligned)
            wx = axis_weights(box[:, 0], box[:, 2], width, w, sampling_ratio, aligned)
            if single:
                taps = (wy[:, 0, :, None] * wx[:, 0, None, :]).reshape(n, height * width)
                out[part] = (taps @ maps[b].reshape(channels, height * width).t()).view(n, channels, 1, 1)
                continue
            # (C·H, n·w): every box's columns contracted at once; then its rows, box by box in one batched product.
            cols = (flat @ wx.reshape(n * w, width).t()).view(channels, height, n, w)
            rows = torch.bmm(wy, cols.permute(2, 1, 0, 3).reshape(n, height, channels * w))
            out[part] = rows.view(n, h, channels, w).permute(0, 2, 1, 3)
    return out
