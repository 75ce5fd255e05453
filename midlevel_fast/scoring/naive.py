"""``mode="naive"``: the per-patch loop a user writes first — a PIL crop + resize per box, normalisation, and one
forward pass at batch 1. It is the slow baseline of the benchmarks and the exact path the fast modes are
checked against (:func:`midlevel_fast.score_image`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from midlevel_fast.model.classifier import PatchClassifier
from midlevel_fast.ops.crop_resize import IMAGENET_MEAN, IMAGENET_STD


def crop_resize_pil(
    image: np.ndarray,
    boxes: np.ndarray | torch.Tensor | Sequence[Sequence[float]],
    size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    float_channels: bool = False,
) -> torch.Tensor:
    """The naive per-patch loop users write: PIL ``resize(BILINEAR, box=...)`` per box, to float, normalise.

    ``image`` is uint8 HWC RGB (or HW grey); boxes are clipped to the image because Pillow refuses boxes that
    leave it. Pillow renormalises its taps at the image border. By default it also rounds every patch to uint8;
    with ``float_channels`` each channel is resized as a 32-bit float image (mode ``F``) instead, so nothing is
    rounded: rounding alone moves EfficientNet-Lite0's patch probabilities by up to 0.02, which would hide real
    differences when the naive scorer is compared with the fused one. Returns ``(N, C, size, size)`` float32.
    """
    arr = image[:, :, None] if image.ndim == 2 else image
    if float_channels:
        sources = [Image.fromarray(np.ascontiguousarray(arr[:, :, c], dtype=np.float32)) for c in range(arr.shape[2])]
    else:
        sources = [Image.fromarray(np.ascontiguousarray(image))]
    wd, ht = sources[0].size
    mean_a = np.asarray(mean, dtype=np.float32)[: arr.shape[2], None, None]
    std_a = np.asarray(std, dtype=np.float32)[: arr.shape[2], None, None]
    patches = []
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).tolist():
        box = (max(x0, 0.0), max(y0, 0.0), min(x1, wd), min(y1, ht))
        planes = [np.asarray(src.resize((size, size), Image.Resampling.BILINEAR, box=box), dtype=np.float32)
                  for src in sources]
        chw = np.stack(planes) if float_channels else np.atleast_3d(planes[0]).transpose(2, 0, 1)
        patches.append(torch.from_numpy((chw / 255.0 - mean_a) / std_a))
    return torch.stack(patches) if patches else torch.empty((0, arr.shape[2], size, size))


def patch_probabilities_naive(model: PatchClassifier, image: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
    """The per-patch loop: for every box, a PIL crop + resize (float channels, see
    :func:`crop_resize_pil`), normalisation, and one forward pass at batch 1.

    ``model`` is a :class:`midlevel_fast.model.classifier.PatchClassifier`; ``image`` RGB uint8 HWC. Returns ``(M, C)``.
    """
    bb = model.backbone
    device = next(model.parameters()).device
    probs = []
    for box in boxes.tolist():
        patch = crop_resize_pil(image, [box], bb.input_size, bb.mean, bb.std, float_channels=True).to(device)
        probs.append(model.probabilities(bb(patch)).cpu())
    return torch.cat(probs)
