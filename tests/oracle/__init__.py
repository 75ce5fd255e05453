"""Slow, obvious implementations: the oracle for the tests and the baseline for the benchmarks.

Nothing here is fast on purpose. Each function states the same contract as its fast counterpart.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from midlevel_fast.ops.crop_resize import IMAGENET_MEAN, IMAGENET_STD, image_hwc


def pad_index(i: int, n: int, padding_mode: str) -> int | None:
    """Source index read for tap ``i`` on an axis of ``n`` pixels; ``None`` means "reads zero"."""
    if 0 <= i < n:
        return i
    if padding_mode == "edge":
        return min(max(i, 0), n - 1)
    if padding_mode == "reflect":
        if n == 1:
            return 0
        period = 2 * (n - 1)
        m = i % period
        return m if m < n else period - m
    return None


def resize_matrix(b0: float, b1: float, n_in: int, n_out: int, antialias: bool, padding_mode: str) -> torch.Tensor:
    """Dense ``(n_out, n_in)`` float64 matrix M with ``output = M @ input`` along one axis (Pillow's triangle
    filter, widened by the shrink factor when antialiasing, taps outside the image mapped by ``padding_mode``)."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    scale = (b1 - b0) / n_out
    support = max(scale, 1.0) if antialias else 1.0
    for j in range(n_out):
        center = b0 + (j + 0.5) * scale
        taps = []
        for x in range(math.floor(center - support) - 1, math.ceil(center + support) + 2):
            w = max(0.0, 1.0 - abs(x + 0.5 - center) / support)
            if w > 0:
                taps.append((x, w))
        total = sum(w for _, w in taps)
        for x, w in taps:
            src = pad_index(x, n_in, padding_mode)
            if src is not None:
                m[j, src] += w / total
    return m


def crop_resize_reference(
    image: torch.Tensor,
    boxes: torch.Tensor,
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    antialias: bool = True,
    padding_mode: str = "edge",
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Per-box float64 ``Wy @ plane @ Wx.T`` with the conventions of :func:`midlevel_fast.crop_resize`.

    ``image``: validated uint8 HWC or float32 CHW tensor; ``boxes``: float ``(N, 4)``; returns ``(N, C, h, w)``.
    """
    h, w, c = image_hwc(image)
    if image.dtype == torch.uint8:
        planes = image.permute(2, 0, 1).to(torch.float64) / 255.0
    else:
        planes = image.to(torch.float64)
    planes = planes.cpu()
    mean_t = torch.tensor(mean, dtype=torch.float64).view(c, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float64).view(c, 1, 1)
    out = torch.empty((boxes.shape[0], c, size[0], size[1]), dtype=torch.float64)
    for n, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        my = resize_matrix(y0, y1, h, size[0], antialias, padding_mode)
        mx = resize_matrix(x0, x1, w, size[1], antialias, padding_mode)
        out[n] = (my @ planes @ mx.T - mean_t) / std_t
    return out.to(out_dtype)


def crop_resize_pil_loop(
    image: np.ndarray,
    boxes: np.ndarray | torch.Tensor,
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    float_channels: bool = False,
) -> torch.Tensor:
    """The naive per-patch loop users write: PIL ``resize(BILINEAR, box=...)`` per box, to float, normalise.

    ``image`` is uint8 HWC RGB (or HW grey); boxes are clipped to the image because Pillow refuses boxes that
    leave it. Pillow renormalises its taps at the image border. By default it also rounds every patch to uint8;
    with ``float_channels`` each channel is resized as a 32-bit float image (mode ``F``) instead, so nothing is
    rounded: rounding alone moves EfficientNet-Lite0's patch probabilities by up to 0.02, which would hide real
    differences when the naive scorer is compared with the fused one. Returns ``(N, C, size, size)`` float32.
    """
    arr = image[:, :, None] if image.ndim == 2 else image
    if float_channels:
        sources = [Image.fromarray(np.ascontiguousarray(arr[:, :, c], dtype=np.float32)) for c in range(arr.shape[2])]
    else:
        sources = [Image.fromarray(np.ascontiguousarray(image))]
    wd, ht = sources[0].size
    mean_a = np.asarray(mean, dtype=np.float32)[: arr.shape[2], None, None]
    std_a = np.asarray(std, dtype=np.float32)[: arr.shape[2], None, None]
    patches = []
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).tolist():
        box = (max(x0, 0.0), max(y0, 0.0), min(x1, wd), min(y1, ht))
        planes = [np.asarray(src.resize((size, size), Image.BILINEAR, box=box), dtype=np.float32) for src in sources]
        chw = np.stack(planes) if float_channels else np.atleast_3d(planes[0]).transpose(2, 0, 1)
        patches.append(torch.from_numpy((chw / 255.0 - mean_a) / std_a))
    return torch.stack(patches) if patches else torch.empty((0, arr.shape[2], size, size))


def crop_resize_interpolate_loop(
    image: torch.Tensor,
    boxes: np.ndarray | torch.Tensor,
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Per-box integer crop + ``F.interpolate(bilinear, antialias=True)`` loop: the torch user's baseline.

    ``image`` is uint8 HWC; each box is rounded outward to whole pixels (interpolate takes no fractional box).
    """
    planes = image.permute(2, 0, 1).unsqueeze(0).float() / 255.0
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    out = []
    for x0, y0, x1, y1 in torch.as_tensor(boxes, dtype=torch.float64).tolist():
        crop = planes[:, :, int(y0): math.ceil(y1), int(x0): math.ceil(x1)]
        r = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                            align_corners=False)
        out.append((r - mean_t) / std_t)
    return torch.cat(out)


def output_maps_reference(boxes: torch.Tensor, probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-box raster loop for :func:`midlevel_fast.ops.aggregate.output_maps`: every pixel whose centre lies in the
    box gets the box's probabilities added and its count incremented."""
    total = torch.zeros(probs.shape[1], height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.float64)
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    for (x0, y0, x1, y1), p in zip(boxes.double().tolist(), probs.double()):
        inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
        total += p[:, None, None] * inside
        count += inside
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total)).float()


def patch_probabilities_naive(model: torch.nn.Module, image: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
    """The per-patch loop: for every box, a PIL crop + resize (float channels, see
    :func:`crop_resize_pil_loop`), normalisation, and one forward pass at batch 1.

    ``model`` is a :class:`midlevel_fast.model.PatchClassifier`; ``image`` RGB uint8 HWC. Returns ``(M, C)``.
    """
    bb = model.backbone
    device = next(model.parameters()).device
    probs = []
    for box in boxes.tolist():
        patch = crop_resize_pil_loop(image, [box], bb.input_size, bb.mean, bb.std, float_channels=True).to(device)
        probs.append(model.probabilities(bb(patch)).cpu())
    return torch.cat(probs)


def patch_labels_reference(
    patch_boxes: Sequence[Sequence[float]] | torch.Tensor,
    object_boxes: Sequence[Sequence[float]] | torch.Tensor,
    object_classes: Sequence[int] | torch.Tensor,
    num_classes: int,
    difficult: Sequence[bool] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Patch-by-patch, object-by-object loop for :func:`midlevel_fast.training.labels.patch_labels`, in exact rational
    arithmetic (every float is converted to a ``Fraction``), so the oracle has no rounding at all and states the
    thresholds as written in the paper: ``|P∩B| ≥ 0.2|P|`` and ``|P∩B| ≥ 0.6|B|``."""
    from fractions import Fraction

    from midlevel_fast.training.labels import DROPPED

    patches = [[Fraction(float(v)) for v in box] for box in torch.as_tensor(patch_boxes, dtype=torch.float64).tolist()]
    objects = [[Fraction(float(v)) for v in box] for box in torch.as_tensor(object_boxes, dtype=torch.float64).tolist()]
    classes = [int(c) for c in torch.as_tensor(object_classes).reshape(-1).tolist()]
    flags = [False] * len(objects) if difficult is None else [bool(d) for d in torch.as_tensor(difficult).tolist()]
    for name, boxes in (("patch_boxes", patches), ("object_boxes", objects)):
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            if not (x1 > x0 and y1 > y0):
                raise ValueError(f"{name}[{i}] is empty or inverted")

    labels = []
    for px0, py0, px1, py1 in patches:
        patch_area = (px1 - px0) * (py1 - py0)
        overlapping = 0
        qualified = []
        for (bx0, by0, bx1, by1), cls, hard in zip(objects, classes, flags):
            inter = max(Fraction(0), min(px1, bx1) - max(px0, bx0)) * max(Fraction(0), min(py1, by1) - max(py0, by0))
            if inter > 0:
                overlapping += 1
                if inter >= Fraction(1, 5) * patch_area and inter >= Fraction(3, 5) * (bx1 - bx0) * (by1 - by0):
                    qualified.append((cls, hard))
        if overlapping == 0:
            labels.append(num_classes)
        elif len(qualified) == 1 and not qualified[0][1]:
            labels.append(qualified[0][0])
        else:
            labels.append(DROPPED)
    return torch.tensor(labels, dtype=torch.int64)


def match_windows_reference(
    dense_boxes: Sequence[Sequence[float]] | torch.Tensor,
    dense_scale: Sequence[int] | torch.Tensor,
    crop_boxes: Sequence[Sequence[float]] | torch.Tensor,
    crop_scale: Sequence[int] | torch.Tensor,
) -> torch.Tensor:
    """Window-by-window, crop-by-crop loop for :func:`midlevel_fast.training.consistency.match_windows`, with the IoU in
    exact rational arithmetic: the first crop of the window's scale with the largest IoU, or -1."""
    from fractions import Fraction

    def exact(boxes):
        return [[Fraction(float(v)) for v in box] for box in torch.as_tensor(boxes, dtype=torch.float64).tolist()]

    crops = list(zip(exact(crop_boxes), torch.as_tensor(crop_scale).reshape(-1).tolist()))
    matches = []
    for (x0, y0, x1, y1), scale in zip(exact(dense_boxes), torch.as_tensor(dense_scale).reshape(-1).tolist()):
        best, best_iou = -1, Fraction(-1)
        for j, ((u0, v0, u1, v1), crop_scale_j) in enumerate(crops):
            if crop_scale_j != scale:
                continue
            inter = max(Fraction(0), min(x1, u1) - max(x0, u0)) * max(Fraction(0), min(y1, v1) - max(y0, v0))
            iou = inter / ((x1 - x0) * (y1 - y0) + (u1 - u0) * (v1 - v0) - inter)
            if iou > best_iou:
                best, best_iou = j, iou
        matches.append(best)
    return torch.tensor(matches, dtype=torch.int64)
