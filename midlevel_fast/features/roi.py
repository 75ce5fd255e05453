"""Features of arbitrary boxes ROI-pooled from the trunk maps of the dense mode's pyramid (SPPnet, Fast R-CNN):
one trunk pass per scale serves any number of boxes, with no crop and forward per box.

* **Level** (SPPnet's rule): each box is pooled on the plane where its scaled area (in resized pixels, the two
  axes scaled by that plane's own factors) is closest to ``input_size²`` (224² for Lite0); ties go to the lower
  scale index. A dense window is at its own level exactly there.
* **Cells**: a box starting at image ``x0`` starts at cell ``(x0·cols/width - off_x) / cell_size`` of a plane of
  ``cols`` resized pixels (``off``: :meth:`~midlevel_fast.backbones.Backbone.grid_offset`) and spans
  ``K / input_size`` cells per resized pixel of its side: the window convention of
  :func:`midlevel_fast.features.dense.window_boxes` inverted (a window's ``input_size`` pixels are its ``K``
  cells from its top-left one: for Lite0 32 pixels per cell throughout; AlexNet's windows start on its 32-pixel
  cells but their 6 cells stand for 224 pixels).
* **Mid-level vector** of a box: its trunk cells resampled to the window's ``K × K`` cells
  (:func:`~midlevel_fast.features.roi_align.roi_align`, aligned, ``sampling_ratio`` samples per bin and axis) and
  fed to the window head. For Lite0 (:class:`~midlevel_fast.backbones.efficientnet_lite.EfficientNetLite0`), whose
  head is the mean of its cells, that mean is taken in the same call (one
  bin of ``K·sampling_ratio`` samples per axis: the same samples, ``K²`` times less memory). With one sample per
  bin, the default, a box that is a dense window at its level reads exactly that window's cells, so its vector is
  the window's :class:`~midlevel_fast.features.dense.DenseWindows` feature.

Feature layout of :func:`box_features`, ``(N, F)`` float32 (:func:`roi_feature_dim`): the mid-level vector
(``feature_dim``); if ``layout``, the means of the box's four quadrants of trunk cells (``4·cell_dim``: top-left,
top-right, bottom-left, bottom-right, each ``ceil(K/2)/K`` of the box's side, as
:meth:`~midlevel_fast.backbones.Backbone.window_layout` takes them, so a dense window's equal its
:class:`~midlevel_fast.backbones.layout.WindowLayout` feature); if ``context``, the mid-level vector of the box
enlarged about its centre by ``context`` per side and clipped to the image, at that box's own level; if
``whole_image``, the mid-level vector of the whole image (the same for every box: the scene the box is in, which a
linear scorer reads as a per-image prior on each class).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch

from midlevel_fast.backbones.base import Backbone
from midlevel_fast.backbones.efficientnet_lite import EfficientNetLite0
from midlevel_fast.backbones.layout import BackboneLike, WindowLayout
from midlevel_fast.backbones.prepared import copy_dtype, prepared
from midlevel_fast.features.dense import (DensePlan, DenseWindows, dense_plan, dense_source, join_windows,
                                          plane_trunk, plane_windows, resize_plane)
from midlevel_fast.features.grid import PAPER_SCALES, PAPER_STEP
from midlevel_fast.features.roi_align import roi_align


@dataclass(frozen=True)
class RoiConfig:
    """What :func:`box_features` returns besides the mid-level vector (module docstring): the four quadrant means
    (``layout``), the context box's vector (``context``: the enlargement factor, ``> 1``; ``None`` for none), the
    whole image's vector (``whole_image``), and the ``sampling_ratio`` of the ``K × K`` resampling (``>= 1``; 1
    reads a dense window's cells exactly)."""

    layout: bool = False
    context: float | None = None
    whole_image: bool = False
    sampling_ratio: int = 1

    def __post_init__(self) -> None:
        if self.context is not None and not self.context > 1:
            raise ValueError(f"context must be a factor > 1 (or None), got {self.context}")
        if self.sampling_ratio < 1:
            raise ValueError(f"sampling_ratio must be >= 1, got {self.sampling_ratio}")


class PyramidMaps(NamedTuple):
    """One image's trunk maps: ``maps[s]`` the ``(D, h, w)`` float32 cells of plane ``s`` of ``plan``, computed by
    ``net`` (a backbone or its prepared copy, whose window head :func:`box_features` applies)."""

    net: BackboneLike
    plan: DensePlan
    maps: list[torch.Tensor]


def image_maps(backbone: BackboneLike, image: np.ndarray, scales: Sequence[float] = PAPER_SCALES,
               grid_step: float = PAPER_STEP, window_step: int | None = None, precision: str = "fp32") -> PyramidMaps:
    """The trunk maps of every plane :func:`~midlevel_fast.features.dense.dense_windows` would compute for
    ``image`` (RGB uint8 HWC), with the same arguments, plan, prepared copy and resized planes; raises as it does."""
    plan = dense_plan(backbone, int(image.shape[0]), int(image.shape[1]), scales, grid_step, window_step)
    net = prepared(backbone, precision)
    source = dense_source(image, next(backbone.parameters()).device)
    maps = [plane_trunk(net, resize_plane(backbone, source, plan, i))[0].float().contiguous()
            for i in range(len(plan.planes))]
    return PyramidMaps(net, plan, maps)


def pyramid_windows(pyramid: PyramidMaps) -> DenseWindows:
    """The dense windows of the image of ``pyramid``, from its maps: :func:`~midlevel_fast.features.dense.dense_windows`
    without a second trunk pass, so that one image's windows and box features share the trunk."""
    net, plan = pyramid.net, pyramid.plan
    return join_windows([
        plane_windows(net, net.window_head(cells[None].to(copy_dtype(net)), plan.step_cells).float()[0], plan, i)
        for i, cells in enumerate(pyramid.maps)])


def _inner(net: BackboneLike) -> Backbone:
    return net.inner if isinstance(net, WindowLayout) else net


def roi_feature_dim(net: BackboneLike, config: RoiConfig = RoiConfig()) -> int:
    """``F`` of :func:`box_features` for ``net`` and ``config`` (module docstring)."""
    inner = _inner(net)
    vectors = 1 + (config.context is not None) + config.whole_image
    return inner.feature_dim * vectors + (4 * inner.cell_dim if config.layout else 0)


def roi_columns(net: BackboneLike, part: RoiConfig, whole: RoiConfig) -> torch.Tensor:
    """``(roi_feature_dim(net, part),)`` int64: where the columns of ``part``'s features lie in ``whole``'s (the
    module docstring's layout), so that ``box_features(p, b, whole)[:, cols]`` equals ``box_features(p, b, part)``.
    Raises ``ValueError`` when ``whole`` lacks a part of ``part``, or their context factors or sampling differ."""
    if (part.layout and not whole.layout) or (part.whole_image and not whole.whole_image) \
            or (part.context is not None and part.context != whole.context) \
            or part.sampling_ratio != whole.sampling_ratio:
        raise ValueError(f"{part} is not a part of {whole}")
    inner = _inner(net)
    blocks, start = [], 0
    for present, wanted, width in [(True, True, inner.feature_dim), (whole.layout, part.layout, 4 * inner.cell_dim),
                                   (whole.context is not None, part.context is not None, inner.feature_dim),
                                   (whole.whole_image, part.whole_image, inner.feature_dim)]:
        if present:
            if wanted:
                blocks.append(torch.arange(start, start + width))
            start += width
    return torch.cat(blocks)


def pyramid_levels(plan: DensePlan, boxes: torch.Tensor) -> torch.Tensor:
    """``(N,)`` int64: the plane of ``plan`` each of ``boxes`` (``(N, 4)`` image pixels) is pooled on, by SPPnet's
    rule (module docstring)."""
    rows = torch.tensor([p[0] for p in plan.planes], dtype=torch.float64)
    cols = torch.tensor([p[1] for p in plan.planes], dtype=torch.float64)
    b = boxes.double()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    scaled = area[:, None] * (rows * cols)[None, :] / (plan.height * plan.width)
    return (scaled - plan.input_size ** 2).abs().argmin(dim=1)  # argmin takes the first of equal values


def checked_boxes(boxes: torch.Tensor | np.ndarray, plan: DensePlan) -> torch.Tensor:
    """``boxes`` as float64 ``(N, 4)`` clipped to the image, or ``ValueError`` for a bad shape, non-finite values,
    ``x1 < x0`` or ``y1 < y0``, or a box with no area inside the image (outside it, or of zero width or height)."""
    b = torch.as_tensor(boxes).double()
    if b.dim() != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) as (x0, y0, x1, y1) in image pixels, got {tuple(b.shape)}")
    bad = ~torch.isfinite(b).all(1)
    if bad.any():
        raise ValueError(f"boxes must be finite; box {int(bad.nonzero()[0])} is {b[bad][0].tolist()}")
    bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if bad.any():
        raise ValueError(f"boxes need x1 >= x0 and y1 >= y0; box {int(bad.nonzero()[0])} is {b[bad][0].tolist()}")
    limit = torch.tensor([plan.width, plan.height] * 2, dtype=torch.float64)
    clipped = torch.minimum(b.clamp(min=0), limit)
    bad = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if bad.any():
        raise ValueError(f"boxes must overlap the {plan.width}x{plan.height} image with a positive area; "
                         f"{int(bad.sum())} do not, the first box {int(bad.nonzero()[0])}: {b[bad][0].tolist()} "
                         "(drop such boxes first)")
    return clipped


def _pool(pyramid: PyramidMaps, boxes: torch.Tensor, levels: torch.Tensor, output: int, samples: int,
          part: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)) -> torch.Tensor:
    """``(N, D, output, output)``: the ``part`` ``(x0, y0, x1, y1)``, in fractions of the box's sides, of each of
    ``boxes`` (image pixels) ROI aligned on the map of its level, ``samples`` samples per bin and axis."""
    net, plan = pyramid.net, pyramid.plan
    out = pyramid.maps[0].new_empty(len(boxes), pyramid.maps[0].shape[0], output, output)
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    sub = boxes[:, :2].repeat(1, 2) + torch.tensor(part, dtype=torch.float64) * size
    for s in levels.unique().tolist():
        picked = (levels == s).nonzero()[:, 0]
        rows, cols = plan.planes[s]
        off_y, off_x = net.grid_offset(rows, cols)
        scale = torch.tensor([cols / plan.width, rows / plan.height], dtype=torch.float64)
        start = (sub[picked, :2] * scale - torch.tensor([off_x, off_y])) / net.cell_size
        extent = (sub[picked, 2:] - sub[picked, :2]) * scale * (net.window / plan.input_size)
        # float64 until here so that a dense window's cells are whole numbers to float32 rounding.
        cell_boxes = torch.cat([start, start + extent], dim=1).float()
        out[picked.to(out.device)] = roi_align(pyramid.maps[s][None], cell_boxes,
                                               torch.zeros(len(picked), dtype=torch.int64), (output, output), samples)
    return out


def _mid_level(pyramid: PyramidMaps, boxes: torch.Tensor, sampling_ratio: int) -> torch.Tensor:
    """``(N, feature_dim)`` mid-level vectors of ``boxes`` (clipped, image pixels), each at its own level."""
    net = _inner(pyramid.net)
    levels = pyramid_levels(pyramid.plan, boxes)
    if isinstance(net, EfficientNetLite0):
        return _pool(pyramid, boxes, levels, 1, net.window * sampling_ratio).flatten(1)
    cells = _pool(pyramid, boxes, levels, net.window, sampling_ratio)
    return net.window_head(cells.to(copy_dtype(net))).float().flatten(1)


def _quadrants(pyramid: PyramidMaps, boxes: torch.Tensor, sampling_ratio: int) -> torch.Tensor:
    """``(N, 4·D)``: the means of the four quadrants of ``boxes``' cells (module docstring), at the box's level."""
    window = _inner(pyramid.net).window
    side = (window + 1) // 2
    near, far = side / window, 1 - side / window
    levels = pyramid_levels(pyramid.plan, boxes)
    parts = [(x, y, x + near, y + near) for y in (0.0, far) for x in (0.0, far)]
    return torch.cat([_pool(pyramid, boxes, levels, 1, side * sampling_ratio, p).flatten(1) for p in parts], dim=1)


def box_features(pyramid: PyramidMaps, boxes: torch.Tensor | np.ndarray,
                 config: RoiConfig = RoiConfig()) -> torch.Tensor:
    """``(N, F)`` float32 features of ``boxes`` (``(N, 4)`` ``(x0, y0, x1, y1)`` in image pixels of the image of
    ``pyramid``, :func:`image_maps`), laid out as the module docstring says (:func:`roi_feature_dim`), on the maps'
    device. Boxes are clipped to the image first; an empty set gives ``(0, F)``. Raises ``ValueError`` for a bad
    shape, non-finite values, ``x1 < x0`` or ``y1 < y0``, or a box with no area inside the image."""
    plan = pyramid.plan
    clipped = checked_boxes(boxes, plan)
    if not len(clipped):
        return pyramid.maps[0].new_zeros(0, roi_feature_dim(pyramid.net, config))
    parts = [_mid_level(pyramid, clipped, config.sampling_ratio)]
    if config.layout:
        parts.append(_quadrants(pyramid, clipped, config.sampling_ratio))
    if config.context:
        centre, half = (clipped[:, :2] + clipped[:, 2:]) / 2, (clipped[:, 2:] - clipped[:, :2]) * config.context / 2
        context = checked_boxes(torch.cat([centre - half, centre + half], dim=1), plan)
        parts.append(_mid_level(pyramid, context, config.sampling_ratio))
    if config.whole_image:
        whole = torch.tensor([[0.0, 0.0, plan.width, plan.height]], dtype=torch.float64)
        parts.append(_mid_level(pyramid, whole, config.sampling_ratio).expand(len(clipped), -1))
    return torch.cat(parts, dim=1)
