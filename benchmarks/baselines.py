"""Baselines the benchmarks time against, as a torch user would write them."""
from __future__ import annotations

import math
from unittest import mock

import numpy as np
import torch

from midlevel_fast import IMAGENET_MEAN, IMAGENET_STD


def crop_resize_interpolate_loop(image: torch.Tensor, boxes: np.ndarray | torch.Tensor,
                                 size: int = 224) -> torch.Tensor:
    """Per-box integer crop + ``F.interpolate(bilinear, antialias=True)`` loop with ImageNet normalisation: the
    torch user's baseline. ``image`` is uint8 HWC; each box is rounded outward to whole pixels (interpolate takes
    no fractional box). Returns ``(N, C, size, size)`` float32 on ``image``'s device."""
    planes = image.permute(2, 0, 1).unsqueeze(0).float() / 255.0
    mean_t = torch.tensor(IMAGENET_MEAN, device=image.device).view(1, -1, 1, 1)
    std_t = torch.tensor(IMAGENET_STD, device=image.device).view(1, -1, 1, 1)
    out = []
    for x0, y0, x1, y1 in torch.as_tensor(boxes, dtype=torch.float64).tolist():
        crop = planes[:, :, int(y0): math.ceil(y1), int(x0): math.ceil(x1)]
        r = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                            align_corners=False)
        out.append((r - mean_t) / std_t)
    return torch.cat(out)


class _ModuleAsBefore(torch.nn.Module):
    """A backbone run as the dense mode ran it before prepared weights: its own unfused float32 module, under
    bfloat16 autocast (which casts every weight again on every call) or in float32."""

    def __init__(self, backbone: torch.nn.Module, autocast: bool) -> None:
        super().__init__()
        self.inner, self.autocast = backbone, autocast

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            return self.inner.trunk(x)

    def window_head(self, cells: torch.Tensor, window_step: int) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            return self.inner.window_head(cells, window_step)


def score_image_before(image: np.ndarray, model, autocast: bool = True):
    """``score_image(image, model)`` in dense mode as it was before prepared weights: the same call, the trunk and
    window head run by the unfused module (:class:`_ModuleAsBefore`: the old default was bf16 autocast on CPUs with
    native bf16, float32 elsewhere), everything else unchanged."""
    from midlevel_fast.features import dense
    from midlevel_fast.scoring import score

    with mock.patch.object(dense, "prepared", lambda backbone, precision: _ModuleAsBefore(backbone, autocast)):
        return score.score_image(image, model, precision="fp32")


def nms_one_matrix(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy NMS as it was before the blockwise one: the whole ``N × N`` float64 IoU matrix at once (8·N² bytes,
    7.7 GB for 31k boxes), then one masked row update per kept box. Indices of the kept boxes, best first."""
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].double()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = (torch.minimum(b[:, None, 2:], b[None, :, 2:]) - torch.maximum(b[:, None, :2], b[None, :, :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    over = inter / (area[:, None] + area[None, :] - inter) > iou
    keep = torch.ones(len(b), dtype=torch.bool)
    for i in range(len(b)):
        if keep[i]:
            keep[i + 1:] &= ~over[i, i + 1:]
    return order[keep]
