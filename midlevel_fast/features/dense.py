"""Fully convolutional sliding window: the trunk runs once per scale on the resized image, the window head
evaluates every K×K window of trunk cells, and each window is mapped back to a box of the image.

This is the paper's remark made concrete: "patch scores could be computed much more efficiently by performing
large convolutions on adequately subsampled versions of the full image".

Rule, per scale ``λ`` (same ``λ`` and ``s = min(W, H)/λ`` as :func:`midlevel_fast.features.grid`):

* the image is resized (antialiased) so that a patch of side ``s`` becomes ``input_size`` (224) pixels; each
  resized side is then rounded to ``input_size + cell_size·window_step·m`` so that windows tile it edge to edge,
  as the grid's patches do (the two axes may be scaled slightly differently, by at most
  ``cell_size·window_step/2`` pixels);
* windows step by ``window_step`` trunk cells (``cell_size·window_step`` resized pixels); by default
  ``window_step = max(1, floor(K·grid_step))``, the largest step not coarser than the grid's ``grid_step·s``
  (2 for Lite0's K = 7 and AlexNet's K = 6 with the paper's grid step 1/3: windows overlap by 71 % and 67 %).
  ``window_step = 1`` is allowed;
* window ``(u, v)`` covers resized pixels ``[cell_size·window_step·v, +input_size) ×
  [cell_size·window_step·u, +input_size)``, i.e. the box ``(x0, y0, x1, y1)`` of the image obtained by dividing
  by the per-axis resize factors.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch

from midlevel_fast.backbones.layout import BackboneLike
from midlevel_fast.backbones.prepared import copy_dtype, prepared
from midlevel_fast.ops.crop_resize import crop_resize
from midlevel_fast.features.grid import PAPER_SCALES, PAPER_STEP

# A resized scale larger than this would need gigabytes of activations; such images go through mode="batched".
MAX_DENSE_PIXELS = 12_000_000


class DenseWindows(NamedTuple):
    """Mid-level vectors ``features (N, F)`` of all windows, their ``boxes (N, 4)`` float32 in image
    coordinates and ``scale_index (N,)`` int64, scale-major then row-major like :func:`midlevel_fast.features.grid`."""

    features: torch.Tensor
    boxes: torch.Tensor
    scale_index: torch.Tensor


def default_window_step(window: int, grid_step: float = PAPER_STEP) -> int:
    """The largest window step, in trunk cells, that is not coarser than the grid's step."""
    return max(1, math.floor(window * grid_step + 1e-9))


def dense_length(length: float, side: float, input_size: int, step_px: int) -> int:
    """Resized length of an image axis of ``length`` where a patch of ``side`` becomes ``input_size`` and whole
    windows stepping ``step_px`` tile the axis edge to edge."""
    scaled = length * input_size / side
    return input_size + step_px * max(0, round((scaled - input_size) / step_px))


def dense_plane_sizes(width: int, height: int, scales: Sequence[float], input_size: int,
                      step_px: int) -> list[tuple[int, int]]:
    """``(rows, cols)`` in pixels of the resized plane of every scale of a ``width``×``height`` image (module
    docstring), computed without touching the image: the sizes the trunk will see, one per scale."""
    sizes = []
    for lam in scales:
        side = min(width, height) / float(lam)
        sizes.append((dense_length(height, side, input_size, step_px), dense_length(width, side, input_size, step_px)))
    return sizes


def check_dense_planes(width: int, height: int, scales: Sequence[float], input_size: int,
                       step_px: int) -> list[tuple[int, int]]:
    """:func:`dense_plane_sizes`, or ``ValueError`` when any scale's plane exceeds :data:`MAX_DENSE_PIXELS`, naming
    the first such scale and the way out. Called before any scale is computed, so that a panorama is refused at
    once rather than after the trunk passes of the scales that fit."""
    sizes = dense_plane_sizes(width, height, scales, input_size, step_px)
    for lam, (hr, wr) in zip(scales, sizes):
        if hr * wr > MAX_DENSE_PIXELS:
            raise ValueError(f"image {width}x{height} is too elongated for mode 'dense': at scale λ={float(lam):g} "
                             f"it needs a {wr}x{hr} dense plane, more than {MAX_DENSE_PIXELS:,} pixels; use "
                             "mode='batched' (CLI: --mode batched), which crops the grid's patches instead")
    return sizes


def window_boxes(n_rows: int, n_cols: int, step_px: int, input_size: int, offset: tuple[int, int],
                 scale_y: float, scale_x: float) -> torch.Tensor:
    """Boxes ``(n_rows·n_cols, 4)`` in image coordinates of a window lattice on a resized image; ``scale_*`` is
    image pixels per resized pixel."""
    ys = (offset[0] + step_px * np.arange(n_rows, dtype=np.float64)) * scale_y
    xs = (offset[1] + step_px * np.arange(n_cols, dtype=np.float64)) * scale_x
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    boxes = np.stack([x0, y0, x0 + input_size * scale_x, y0 + input_size * scale_y], axis=-1).reshape(-1, 4)
    return torch.from_numpy(boxes.astype(np.float32))


class DensePlan(NamedTuple):
    """The geometry of one image's dense pass, fixed before any pixel is touched: the image's ``height`` and
    ``width``, the window step in trunk cells (``step_cells``) and resized pixels (``step_px``), the window side
    ``input_size`` and the ``(rows, cols)`` in pixels of every scale's resized plane (``planes``, one per scale)."""

    height: int
    width: int
    step_cells: int
    step_px: int
    input_size: int
    planes: list[tuple[int, int]]


def window_step_cells(backbone: BackboneLike, grid_step: float = PAPER_STEP, window_step: int | None = None) -> int:
    """The window step in trunk cells: ``window_step``, or :func:`default_window_step` for ``None``; raises
    ``ValueError`` when it is below 1."""
    step_cells = default_window_step(backbone.window, grid_step) if window_step is None else int(window_step)
    if step_cells < 1:
        raise ValueError(f"window_step must be >= 1, got {window_step}")
    return step_cells


def dense_plan(backbone: BackboneLike, height: int, width: int, scales: Sequence[float] = PAPER_SCALES,
               grid_step: float = PAPER_STEP, window_step: int | None = None) -> DensePlan:
    """The :class:`DensePlan` of a ``width``×``height`` image (module docstring). Raises ``ValueError`` for
    ``window_step < 1`` or when a scale would exceed :data:`MAX_DENSE_PIXELS` (:func:`check_dense_planes`)."""
    step_cells = window_step_cells(backbone, grid_step, window_step)
    size, step_px = backbone.input_size, backbone.cell_size * step_cells
    planes = check_dense_planes(width, height, scales, size, step_px)
    return DensePlan(int(height), int(width), step_cells, step_px, size, planes)


def dense_source(image: np.ndarray | torch.Tensor, device: torch.device) -> np.ndarray | torch.Tensor:
    """What :func:`resize_plane` reads ``image`` (RGB uint8 HWC, a numpy array or a CPU tensor) from: on a GPU the
    image uploaded once (its planes are resized there: the uint8 image is far fewer bytes than its float planes),
    elsewhere ``image`` itself."""
    if device.type != "cuda":
        return image
    host = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(image))
    # From pinned memory (score_images pins the images its workers decode) the upload need not wait for the work
    # queued before it; torch's pinned allocator keeps the buffer alive until the copy is done.
    return host.to(device, non_blocking=host.is_pinned())


def resize_plane(backbone: BackboneLike, source: np.ndarray | torch.Tensor, plan: DensePlan,
                 scale: int) -> torch.Tensor:
    """Plane number ``scale`` of ``plan`` resized from ``source`` (RGB uint8 HWC, numpy or a tensor on the GPU:
    :func:`dense_source`): ``(1, 3, rows, cols)`` float32 normalised with the backbone's mean and std,
    channels_last (the trunks' layout, written so by the CPU kernel: no transposing copy), on the device of
    ``source``. One plane at a time, so that only one is held while the trunk runs on it."""
    return crop_resize(source, [[0.0, 0.0, plan.width, plan.height]], size=plan.planes[scale], mean=backbone.mean,
                       std=backbone.std, memory_format=torch.channels_last)


def dense_planes(backbone: BackboneLike, image: np.ndarray, scales: Sequence[float] = PAPER_SCALES
                 ) -> list[torch.Tensor]:
    """Every plane the dense mode feeds the trunk for ``image`` (RGB uint8 HWC), in scale order, as channels_last
    float32 ``(1, 3, rows, cols)`` (:func:`resize_plane`): all held at once, for benchmarks and experiments that
    run the trunk alone; :func:`dense_windows` makes one at a time."""
    plan = dense_plan(backbone, image.shape[0], image.shape[1], scales)
    return [resize_plane(backbone, image, plan, s) for s in range(len(plan.planes))]


def plane_trunk(net: BackboneLike, planes: torch.Tensor) -> torch.Tensor:
    """Trunk cells ``(B, D, h, w)`` of ``B`` planes of one size ``(B, 3, H, W)``, computed by ``net`` (a prepared
    copy, :func:`midlevel_fast.backbones.prepared.prepared`) in its dtype on its device, channels_last."""
    device = next(net.parameters()).device
    # Planes come channels_last from resize_plane, so this is at most a dtype cast (0.5 ms for the largest plane
    # in bf16; torch's cast and transpose of a float32 NCHW plane in one copy took 5.7 ms).
    x = planes.to(device, copy_dtype(net)).contiguous(memory_format=torch.channels_last)
    return net.trunk(x)


def plane_features(net: BackboneLike, planes: torch.Tensor, step_cells: int) -> torch.Tensor:
    """Window features ``(B, F, rows, cols)`` float32 of ``B`` planes of one size ``(B, 3, H, W)`` (of one image or
    of several: planes are independent through the trunk and the window head), computed by ``net`` (a prepared
    copy, :func:`midlevel_fast.backbones.prepared.prepared`) in its dtype on its device."""
    return net.window_head(plane_trunk(net, planes), step_cells).float()


def plane_windows(backbone: BackboneLike, features: torch.Tensor, plan: DensePlan, scale: int) -> DenseWindows:
    """The windows of one plane: ``features (F, rows, cols)`` (one item of :func:`plane_features`) of scale number
    ``scale`` of ``plan`` as row-major ``(rows·cols, F)`` vectors, their boxes in image coordinates (the
    backbone's :meth:`~midlevel_fast.backbones.Backbone.grid_offset` for that plane) and their scale index."""
    (hr, wr), (rows, cols) = plan.planes[scale], features.shape[1:]
    boxes = window_boxes(rows, cols, plan.step_px, plan.input_size, backbone.grid_offset(hr, wr), plan.height / hr,
                         plan.width / wr)
    return DenseWindows(features.flatten(1).t(), boxes, torch.full((rows * cols,), scale, dtype=torch.int64))


def join_windows(per_scale: Sequence[DenseWindows]) -> DenseWindows:
    """One image's windows of every scale (each from :func:`plane_windows`, in scale order) as one
    :class:`DenseWindows`."""
    return DenseWindows(*(torch.cat(parts) for parts in zip(*per_scale)))


def dense_windows(
    backbone: BackboneLike,
    image: np.ndarray,
    scales: Sequence[float] = PAPER_SCALES,
    grid_step: float = PAPER_STEP,
    window_step: int | None = None,
    precision: str = "fp32",
) -> DenseWindows:
    """All windows of ``image`` (RGB uint8 HWC) at every scale; see the module docstring for the geometry.

    ``backbone`` follows :class:`midlevel_fast.backbones.Backbone`. ``precision`` (``"fp32"``, ``"bf16"`` or
    ``"int8"``) picks the backbone's prepared copy that runs the trunk and window head
    (:func:`midlevel_fast.backbones.prepared.prepared`: weights cast once, convolutions fused with their
    activations on CPU, or int8); features come back float32. Raises ``ValueError`` for ``window_step < 1`` or when a
    scale would exceed :data:`MAX_DENSE_PIXELS` (very elongated images: use ``mode="batched"``), checked for every
    scale before the first is computed (:func:`check_dense_planes`). Scores planes one at a time;
    :func:`midlevel_fast.scoring.images.score_images` runs the same functions on planes of several images.
    """
    plan = dense_plan(backbone, int(image.shape[0]), int(image.shape[1]), scales, grid_step, window_step)
    net = prepared(backbone, precision)
    source = dense_source(image, next(backbone.parameters()).device)
    return join_windows([
        plane_windows(backbone, plane_features(net, resize_plane(backbone, source, plan, i), plan.step_cells)[0],
                      plan, i)
        for i in range(len(plan.planes))])
