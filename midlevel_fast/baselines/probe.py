"""The whole-image baseline: one view of the full image (no patches) — squashed to the backbone's 224×224 input,
or resized with its aspect kept to a given short side — the backbone's globally pooled vector, and a linear
multi-label classifier on top: what the patch method has to beat, and the probe of the class activation maps
(:mod:`midlevel_fast.baselines.cam`)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from midlevel_fast.backbones.layout import BackboneLike
from midlevel_fast.metrics.average_precision import mean_average_precision
from midlevel_fast.io.image_io import load_image
from midlevel_fast.ops.crop_resize import crop_resize


def whole_image_view_size(backbone: BackboneLike, height: int, width: int,
                          short_side: int | None = None) -> tuple[int, int]:
    """``(h, w)`` of the whole-image view of a ``height × width`` image: ``short_side=None`` squashes it to
    ``input_size × input_size``; an int gives it that short side and the long side the nearest whole number
    keeping the aspect."""
    if short_side is None:
        return backbone.input_size, backbone.input_size
    if int(short_side) < 1:
        raise ValueError(f"short_side must be a positive number of pixels or None, got {short_side!r}")
    ratio = int(short_side) / min(height, width)
    return max(1, round(height * ratio)), max(1, round(width * ratio))


def whole_image_view(backbone: BackboneLike, image: np.ndarray, short_side: int | None = None) -> torch.Tensor:
    """``(1, 3, h, w)`` float32 normalised view of the whole RGB uint8 HWC ``image``, resized (antialiased) to
    :func:`whole_image_view_size`."""
    h, w = image.shape[:2]
    return crop_resize(image, [[0.0, 0.0, w, h]], size=whole_image_view_size(backbone, h, w, short_side),
                       mean=backbone.mean, std=backbone.std)


def whole_image_cells(backbone: BackboneLike, image: np.ndarray, short_side: int | None = None) -> torch.Tensor:
    """``(1, D, h, w)`` float32: the trunk's output on :func:`whole_image_view` (no gradient)."""
    view = whole_image_view(backbone, image, short_side)
    with torch.inference_mode():
        return backbone.trunk(view.contiguous(memory_format=torch.channels_last))


def whole_image_features(backbone: BackboneLike, paths: Sequence[str | Path], batch: int = 32,
                         short_side: int | None = None) -> torch.Tensor:
    """``(n, feature_dim)`` float32: the global average of :func:`whole_image_cells` of each image (for the
    squashed view, the backbone's own pooled vector); squashed views go through the network ``batch`` at a time,
    views of other sizes one by one."""
    if short_side is not None:
        return torch.cat([whole_image_cells(backbone, load_image(p), short_side).mean(dim=(2, 3)) for p in paths])
    feats, views = [], []
    with torch.inference_mode():
        for i, path in enumerate(paths):
            views.append(whole_image_view(backbone, load_image(path)))
            if len(views) == batch or i == len(paths) - 1:
                feats.append(backbone(torch.cat(views).contiguous(memory_format=torch.channels_last)))
                views = []
    return torch.cat(feats)


def train_probe(train_x: torch.Tensor, train_pos: np.ndarray, val_x: torch.Tensor, val_pos: np.ndarray,
                val_ignore: np.ndarray, epochs: int = 200, weight_decay: float = 1e-4, seed: int = 0,
                ) -> tuple[torch.nn.Linear, np.ndarray, float]:
    """Linear layer with per-class binary cross-entropy (Adam, full batch, inputs standardised with the training
    statistics); the epoch with the best validation mAP (VOC2010+) is kept, as for the patch head. Returns the
    layer (taking standardised inputs folded in), per-class AP and mAP on the validation set."""
    torch.manual_seed(seed)
    mu, sd = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    xt, xv = (train_x - mu) / sd, (val_x - mu) / sd
    yt = torch.from_numpy(train_pos.astype(np.float32))
    layer = torch.nn.Linear(train_x.shape[1], yt.shape[1])
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3, weight_decay=weight_decay)
    best_map, best_ap, best_state = -1.0, None, None
    for _ in range(epochs):
        loss = F.binary_cross_entropy_with_logits(layer(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            ap, m = mean_average_precision(layer(xv).numpy(), val_pos, val_ignore, "voc2010")
        if m > best_map:
            best_map, best_ap, best_state = m, ap, copy.deepcopy(layer.state_dict())
    if best_state is None or best_ap is None:
        raise ValueError(f"train_probe kept no epoch: epochs must be >= 1 (got {epochs}) and the validation mAP a "
                         "number (it was NaN in every epoch)")
    layer.load_state_dict(best_state)
    with torch.no_grad():
        layer.weight.div_(sd)
        layer.bias.sub_(layer.weight @ mu)
    return layer, best_ap, best_map
