"""Launcher of the CUDA C++ crop_resize kernel (``csrc/cuda/crop_resize.cu`` via ``midlevel_fast._cuda``).

The extension is torch-free: this module hands it the data pointers and element strides of tensors that
:func:`midlevel_fast.crop_resize` has validated, the boxes on the image's device (the kernel computes the filter
taps from them itself, with the C++ kernel's tap math) and the current stream of that device. The launch is
asynchronous on that stream, like a torch op: no torch op runs on the device besides the copy of the boxes.
"""
from __future__ import annotations

from typing import Sequence

import torch

from midlevel_fast.ops.backends import backends, cuda_ext
from midlevel_fast.ops.crop_resize import PADDING_MODES, image_hwc
from midlevel_fast.ops.crop_resize.taps import normalisation


def crop_resize_cuda(image: torch.Tensor, boxes: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                     antialias: bool, padding_mode: str, out: torch.Tensor) -> torch.Tensor:
    """Writes the crops of validated ``boxes`` (float64 ``(N, 4)``, any device) of ``image`` (uint8 HWC or
    float32 CHW, on a CUDA device, any strides) into ``out`` (contiguous ``(N, C, h, w)`` float32/float16 on the
    image's device) and returns ``out``. Raises ``RuntimeError`` when the CUDA backend is unavailable."""
    if cuda_ext is None:
        raise RuntimeError(backends()["cuda"].detail)
    n = boxes.shape[0]
    if n == 0:
        return out
    h, w, c = image_hwc(image)
    uint8 = image.dtype == torch.uint8
    if uint8:
        layout, (sy, sx, sc) = 0, image.stride()
    else:
        layout, (sc, sy, sx) = 1, image.stride()
    out_h, out_w = out.shape[2], out.shape[3]
    scale, shift = normalisation(mean, std, uint8)
    b = boxes.to(torch.float64).contiguous()
    # Size the kernel's shared memory; read from the (CPU) boxes, so without a device sync.
    max_row_scale = float(((b[:, 3] - b[:, 1]) / out_h).max())
    max_col_scale = float(((b[:, 2] - b[:, 0]) / out_w).max())
    if b.device != image.device:
        # From pinned memory the copy is asynchronous; torch keeps the pinned block until the copy is done.
        b = (b.pin_memory() if b.device.type == "cpu" else b).to(image.device, non_blocking=True)
    device = image.device.index if image.device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(device).cuda_stream
    cuda_ext.crop_resize(
        image.data_ptr(), layout, h, w, c, sy, sx, sc, b.data_ptr(), n, out_h, out_w,
        antialias=antialias, padding=PADDING_MODES.index(padding_mode), max_row_scale=max_row_scale,
        max_col_scale=max_col_scale, scale=scale, shift=shift, out_dtype=0 if out.dtype == torch.float32 else 1,
        out=out.data_ptr(), device=device, stream=stream,
    )
    return out
