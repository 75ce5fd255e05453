"""The one entry point of patch features, for scoring and for the feature cache alike: dense windows or batched
grid crops of one image.

Convention: boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates of the (EXIF-oriented) image.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from midlevel_fast.backbones.layout import BackboneLike
from midlevel_fast.features.batched import batched_patches
from midlevel_fast.features.dense import dense_windows
from midlevel_fast.runtime.malloc import tune_malloc


def patch_features(backbone: BackboneLike, image: np.ndarray, mode: str, scales: Sequence[float],
                   grid_step: float, window_step: int | None = None, batch: int | None = None,
                   precision: str = "fp32",
                   progress: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(features (M, F), boxes (M, 4), scale_index (M,))`` of ``image`` (RGB uint8 HWC) in ``mode`` ``"dense"``
    (sliding window, see :mod:`midlevel_fast.features.dense`; ``window_step``) or ``"batched"`` (the paper grid,
    cropped and resized, ``batch`` patches per forward: :mod:`midlevel_fast.features.batched`); ``precision``
    (``"fp32"``, ``"bf16"`` or ``"int8"``, already resolved) picks the backbone's prepared copy
    (:mod:`midlevel_fast.backbones.prepared`); ``progress`` shows a bar over a long image's batched chunks
    (``None``: only for many patches on a terminal, :func:`midlevel_fast.features.batched.show_progress`). The
    entry point of the feature cache as well as of :func:`midlevel_fast.scoring.score.score_image`."""
    tune_malloc()
    if mode == "dense":
        return dense_windows(backbone, image, scales, grid_step, window_step, precision)
    if mode != "batched":
        raise ValueError(f"patch features are computed in mode 'dense' or 'batched', not {mode!r}")
    return batched_patches(backbone, image, scales, grid_step, batch, precision, progress)
