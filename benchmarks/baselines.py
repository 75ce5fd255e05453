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


def dense_module_scores(model, image: np.ndarray, k: float = 5.0, autocast: bool = True) -> torch.Tensor:
    """The dense scores as computed before prepared weights: each scale's plane through the unfused module, under
    bfloat16 autocast (which casts every weight again on every call; the default on CPUs with native bf16) or in
    float32 (the default elsewhere), then the head and the power mean. Same planes and windows as
    :func:`midlevel_fast.scoring.dense.dense_windows`."""
    from midlevel_fast.ops.crop_resize import crop_resize
    from midlevel_fast.scoring.dense import default_window_step, dense_plane_sizes
    from midlevel_fast.scoring.grid import PAPER_SCALES

    bb = model.backbone
    h, w = image.shape[:2]
    step = default_window_step(bb.window)
    feats = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for size in dense_plane_sizes(w, h, PAPER_SCALES, bb.input_size, bb.cell_size * step):
            plane = crop_resize(image, [[0, 0, w, h]], size=size, mean=bb.mean, std=bb.std)
            f = bb.window_head(bb.trunk(plane.contiguous(memory_format=torch.channels_last)), step)[0]
            feats.append(f.float().flatten(1).t())
    with torch.inference_mode():
        probs = model.probabilities(torch.cat(feats))
    # The library's score: 1/M sum_i p_i^k (no k-th root), in float64 as power_mean computes it.
    return probs.double().pow(k).mean(0).float()
