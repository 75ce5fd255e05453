"""Launcher of the CUDA C++ crop_resize kernel (``csrc/cuda/crop_resize.cu`` via ``midlevel_fast._cuda``).

The extension is torch-free: this module hands it the data pointers of tensors that
:func:`midlevel_fast.crop_resize` has validated, the image's shape and strides, the C++ twin of the
:class:`~midlevel_fast.ops.crop_resize.schema.CropResizeParams`, the boxes on the image's device (the kernel
computes the filter taps and the normalisation from them itself, with the C++ kernel's math) and the current
stream of that device. The launch is asynchronous on that stream, like a torch op: no torch op runs on the device
besides the copy of the boxes.
"""
from __future__ import annotations

import torch

from midlevel_fast.ops.backends import backends, cuda_ext
from midlevel_fast.ops.crop_resize.schema import CropResizeParams, image_view


def crop_resize_cuda(image: torch.Tensor, boxes: torch.Tensor, params: CropResizeParams,
                     out: torch.Tensor) -> torch.Tensor:
    """Writes the crops of validated ``boxes`` (float64 ``(N, 4)``, any device) of ``image`` (uint8 HWC or
    float32 CHW, on a CUDA device, any strides) into ``out`` (contiguous ``params.out_shape(N)`` of
    ``params.out_dtype`` on the image's device) and returns ``out``. Raises ``RuntimeError`` when the CUDA backend
    is unavailable."""
    if cuda_ext is None:
        raise RuntimeError(backends()["cuda"].detail)
    n = boxes.shape[0]
    if n == 0:
        return out
    b = boxes.to(torch.float64).contiguous()
    # Size the kernel's shared memory; read from the (CPU) boxes, so without a device sync.
    max_row_scale = float(((b[:, 3] - b[:, 1]) / params.out_h).max())
    max_col_scale = float(((b[:, 2] - b[:, 0]) / params.out_w).max())
    if b.device != image.device:
        # From pinned memory the copy is asynchronous; torch keeps the pinned block until the copy is done.
        b = (b.pin_memory() if b.device.type == "cpu" else b).to(image.device, non_blocking=True)
    device = image.device.index if image.device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(device).cuda_stream
    cuda_ext.crop_resize(
        image_view(image).native(cuda_ext, image.data_ptr()), b.data_ptr(), n, params.native(cuda_ext),
        out.data_ptr(), max_row_scale=max_row_scale, max_col_scale=max_col_scale, device=device, stream=stream,
    )
    return out
