"""Pure-torch crop_resize (``backend="torch"``): slow, on any device torch runs on, from the tap tables of
:mod:`midlevel_fast.ops.crop_resize.taps`.

The taps of each box are scattered into one dense resize matrix per axis, so that a crop is
``Wy · plane · Wxᵀ``, computed for a chunk of boxes at a time by batched float64 matmuls. Same filter, padding and
normalisation as the kernels, not their order of operations: results agree within the kernels' tolerance, not bit
for bit. (Not named ``torch.py``: that submodule would shadow ``torch`` in the package ``__init__``.)
"""
from __future__ import annotations

import torch

from midlevel_fast.ops.crop_resize.schema import CropResizeParams, image_view
from midlevel_fast.ops.crop_resize.taps import AxisTaps, kernel_setup

# Boxes per batched matmul: bounds the dense matrices and the (boxes, C, out_h, width) intermediate to about
# 100 MB for 224² crops of a 500-pixel-wide image.
CHUNK = 32


def resize_matrices(taps: AxisTaps, n_in: int, start: int, stop: int) -> torch.Tensor:
    """``(stop − start, n_out, n_in)`` float64: the taps of boxes ``start .. stop − 1`` as dense matrices, so that
    ``output = M @ input`` along the axis."""
    index = taps.index[start:stop].permute(0, 2, 1).long()
    weight = taps.weight[start:stop].permute(0, 2, 1).to(torch.float64)
    dense = torch.zeros((*index.shape[:2], n_in + 1), dtype=torch.float64, device=index.device)
    # A tap that reads zero (index -1, weight 0) lands in the extra last column, which is dropped.
    dense.scatter_add_(2, torch.where(index < 0, n_in, index), weight)
    return dense[:, :, :n_in]


def crop_resize_torch(image: torch.Tensor, boxes: torch.Tensor, params: CropResizeParams,
                      out: torch.Tensor) -> torch.Tensor:
    """Writes the crops of validated ``boxes`` (float64 ``(N, 4)``, best on the CPU) of ``image`` (uint8 HWC or
    float32 CHW, any device and strides) into ``out`` (``params.out_shape(N)`` of ``params.out_dtype`` on the
    image's device) and returns ``out``."""
    view = image_view(image)
    setup = kernel_setup(boxes, view, params, image.device)
    planes = (image.permute(2, 0, 1) if view.uint8 else image).to(torch.float64)
    scale = torch.tensor(setup.scale, dtype=torch.float64, device=image.device).view(-1, 1, 1)
    shift = torch.tensor(setup.shift, dtype=torch.float64, device=image.device).view(-1, 1, 1)
    for start in range(0, boxes.shape[0], CHUNK):
        stop = min(start + CHUNK, boxes.shape[0])
        wy = resize_matrices(setup.rows, view.height, start, stop)
        wx = resize_matrices(setup.cols, view.width, start, stop)
        crops = wy[:, None] @ planes[None] @ wx.transpose(1, 2)[:, None]
        out[start:stop] = crops * scale + shift
    return out
