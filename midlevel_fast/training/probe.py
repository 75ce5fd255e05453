"""The whole-image baseline: one 224×224 view of the full image (squashed, no patches), the backbone's pooled
vector, and a linear multi-label classifier on top — what the patch method has to beat."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from midlevel_fast.training.evaluate import mean_average_precision
from midlevel_fast.io.image_io import load_image
from midlevel_fast.ops.crop_resize import crop_resize


def whole_image_features(backbone: torch.nn.Module, paths: Sequence[str | Path], batch: int = 32) -> torch.Tensor:
    """``(n, feature_dim)`` float32: each image resized whole to the backbone's input size (antialiased), one
    forward pass."""
    size = backbone.input_size
    feats, views = [], []
    with torch.inference_mode():
        for i, path in enumerate(paths):
            img = load_image(path)
            h, w = img.shape[:2]
            views.append(crop_resize(img, [[0.0, 0.0, w, h]], size=size, mean=backbone.mean, std=backbone.std))
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
    best = (-1.0, None, None)
    for _ in range(epochs):
        loss = F.binary_cross_entropy_with_logits(layer(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            ap, m = mean_average_precision(layer(xv).numpy(), val_pos, val_ignore, "voc2010")
        if m > best[0]:
            best = (m, ap, copy.deepcopy(layer.state_dict()))
    layer.load_state_dict(best[2])
    with torch.no_grad():
        layer.weight.div_(sd)
        layer.bias.sub_(layer.weight @ mu)
    return layer, best[1], best[0]
