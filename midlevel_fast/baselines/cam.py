"""Class activation maps (Zhou et al., "Learning deep features for discriminative localization", CVPR 2016): the
peer baseline of the output maps. A linear probe trained on the globally pooled last feature map
(:func:`midlevel_fast.baselines.probe.train_probe` on :func:`~midlevel_fast.baselines.probe.whole_image_features`)
is applied at every location of that map before pooling — its weights as a 1×1 convolution on the trunk's output
— and the per-cell scores are upsampled to the image.

Since pooling is a mean and the probe is affine, the mean of a CAM over its cells equals the probe's logits on
the pooled vector (:func:`cam_cells`). Geometry (:func:`upsample_cells`): cell ``v`` of a trunk with
``cell_size`` pixels per cell and grid offset ``off`` (:meth:`midlevel_fast.backbones.Backbone.grid_offset`)
covers view pixels ``[off + cell_size·v, off + cell_size·(v+1))``; its value sits at the cell's centre, mapped to
image pixels by the view's per-axis resize factor, and the map between centres is bilinear (constant beyond the
outer centres). Image pixel ``j``'s value is taken at its centre ``j + 0.5``. For a squashed 224 view this is
``F.interpolate(..., mode="bilinear", align_corners=False)``.
"""
from __future__ import annotations

import numpy as np
import torch

from midlevel_fast.backbones import Backbone
from midlevel_fast.baselines.probe import whole_image_cells, whole_image_view_size


def check_cam_backbone(backbone: Backbone) -> None:
    """Raises ``ValueError`` unless ``backbone``'s trunk cells tile its input (``window · cell_size ==
    input_size``, as for EfficientNet-Lite0): the geometry above assumes it."""
    if backbone.window * backbone.cell_size != backbone.input_size:
        raise ValueError(f"CAM geometry needs trunk cells tiling the input: {backbone.name} has {backbone.window} "
                         f"cells of {backbone.cell_size} px for a {backbone.input_size} px input")


def cam_cells(cells: torch.Tensor, probe: torch.nn.Linear) -> torch.Tensor:
    """``(C, h, w)`` float32: the probe (``Linear(D, C)``) as a 1×1 convolution on the trunk's output ``cells``
    ``(1, D, h, w)`` or ``(D, h, w)``, bias included (it does not move the maximum)."""
    x = cells.reshape(-1, *cells.shape[-3:])[0].float()
    return torch.einsum("dhw,cd->chw", x, probe.weight.detach().float()) + probe.bias.detach().float()[:, None, None]


def _axis_weights(n_image: int, n_view: int, n_cells: int, offset: int, cell_size: int) -> torch.Tensor:
    """``(n_image, n_cells)`` float32 linear-interpolation weights from cell centres to image pixel centres."""
    centre = (torch.arange(n_image, dtype=torch.float64) + 0.5) * (n_view / n_image)  # in view pixels
    pos = ((centre - offset) / cell_size - 0.5).clamp(0, n_cells - 1)  # in cells: cell v's centre at v
    lo = pos.floor().long().clamp(max=max(n_cells - 2, 0))
    frac = pos - lo
    w = torch.zeros(n_image, n_cells, dtype=torch.float64)
    w[torch.arange(n_image), lo] = 1 - frac
    if n_cells > 1:
        w[torch.arange(n_image), lo + 1] += frac
    return w.float()


def upsample_cells(cam: torch.Tensor, backbone: Backbone, view_size: tuple[int, int],
                   image_size: tuple[int, int]) -> torch.Tensor:
    """``(C, H, W)`` float32: per-cell maps ``cam (C, h, w)`` of a ``view_size (h_view, w_view)`` view, upsampled
    to an image of ``image_size (H, W)`` (module docstring)."""
    check_cam_backbone(backbone)
    off_y, off_x = backbone.grid_offset(*view_size)
    wy = _axis_weights(image_size[0], view_size[0], cam.shape[1], off_y, backbone.cell_size)
    wx = _axis_weights(image_size[1], view_size[1], cam.shape[2], off_x, backbone.cell_size)
    return torch.einsum("yh,chw,xw->cyx", wy, cam.float(), wx)


def image_cams(cells: torch.Tensor, probe: torch.nn.Linear, backbone: Backbone, image_size: tuple[int, int],
               short_side: int | None = None) -> torch.Tensor:
    """``(C, H, W)`` float32 CAMs of an image of ``image_size (H, W)`` from its trunk output ``cells`` on the
    view :func:`midlevel_fast.baselines.probe.whole_image_cells` makes with ``short_side``."""
    view_size = whole_image_view_size(backbone, image_size[0], image_size[1], short_side)
    return upsample_cells(cam_cells(cells, probe), backbone, view_size, image_size)


def class_activation_maps(backbone: Backbone, probe: torch.nn.Linear, image: np.ndarray,
                          short_side: int | None = None) -> torch.Tensor:
    """``(C, H, W)`` float32 CAMs of the RGB uint8 HWC ``image`` for ``probe``'s classes, on the view of
    :func:`midlevel_fast.baselines.probe.whole_image_view` (``short_side=None``: squashed to 224×224; else that
    short side, aspect kept). The probe must have been trained on the pooled features of the same kind of view."""
    check_cam_backbone(backbone)
    return image_cams(whole_image_cells(backbone, image, short_side), probe, backbone, image.shape[:2], short_side)
