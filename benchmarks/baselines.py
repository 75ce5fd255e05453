"""Baselines the benchmarks time against, as a torch user would write them."""
from __future__ import annotations

import math
import numpy as np
import torch

from midlevel_fast import IMAGENET_MEAN, IMAGENET_STD


def crop_resize_interpolate_loop(image: torch.Tensor, boxes: np.ndarray | torch.Tensor,
                                 size: int = 224) -> torch.Tensor:
    """Per-box integer crop + ``F.interpolate(bilinear, antialias=True)`` loop with ImageNet normalisation: the
    torch user's baseline. ``image`` is uint8 HWC; each box is rounded outward to whole pixels (interpolate takes
    no fractional box). Returns ``(N, C, size, size)`` float32."""
    planes = image.permute(2, 0, 1).unsqueeze(0).float() / 255.0
    mean_t = torch.tensor(IMAGENET_MEAN).view(1, -1, 1, 1)
    std_t = torch.tensor(IMAGENET_STD).view(1, -1, 1, 1)
    out = []
    for x0, y0, x1, y1 in torch.as_tensor(boxes, dtype=torch.float64).tolist():
        crop = planes[:, :, int(y0): math.ceil(y1), int(x0): math.ceil(x1)]
        r = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                            align_corners=False)
        out.append((r - mean_t) / std_t)
    return torch.cat(out)
