"""Launcher of the C++ CPU crop_resize kernel (``csrc/cpu/crop_resize.cpp`` via ``midlevel_fast._C``).

The extension is torch-free: this module hands it the data pointers of tensors that
:func:`midlevel_fast.crop_resize` has validated, the image's shape and strides, and the C++ twin of the
:class:`~midlevel_fast.ops.crop_resize.schema.CropResizeParams`. The kernel releases the GIL while it runs.
"""
from __future__ import annotations

import torch

from midlevel_fast.ops.backends import backends, cpu_ext
from midlevel_fast.ops.crop_resize.schema import CropResizeParams, image_view


def crop_resize_cpu(image: torch.Tensor, boxes: torch.Tensor, params: CropResizeParams,
                    out: torch.Tensor) -> torch.Tensor:
    """Writes the crops of validated ``boxes`` (contiguous float64 ``(N, 4)`` on the CPU) of ``image`` (uint8 HWC
    or float32 CHW on the CPU, any strides) into ``out`` (contiguous ``params.out_shape(N)`` of
    ``params.out_dtype`` on the CPU) and returns ``out``. Raises ``RuntimeError`` when the extension is missing."""
    if cpu_ext is None:
        raise RuntimeError(backends()["cpu"].detail)
    if boxes.shape[0] > 0:
        cpu_ext.crop_resize(image_view(image).native(cpu_ext, image.data_ptr()), boxes.data_ptr(), boxes.shape[0],
                            params.native(cpu_ext), out.data_ptr())
    return out
