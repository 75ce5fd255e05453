"""The smallest image worth scoring, checked by :func:`midlevel_fast.scoring.score.score_image` before any work.

The smallest patch of the grid has side ``min(W, H) / max(λ)`` (:mod:`midlevel_fast.features.grid`; 4 with the
paper's scales) and is resized to the backbone's ``input_size`` (224) in every mode: the dense planes are resized
so that it becomes 224 pixels, the batched and naive modes crop and resize it to 224. Nothing in the backbones
forbids a smaller patch (a 1×1 image is upsampled to 224×224 without complaint), so the limit is one of meaning:
the trunk summarises a patch in ``input_size / cell_size`` cells per side (7 for EfficientNet-Lite0 and AlexNet,
whose output stride is 32), and a patch with fewer pixels per side than that has each of its pixels spread over
more than one trunk cell, so the window vector describes an interpolation of a handful of pixels, not an image
patch. :func:`min_patch_side` is therefore ``ceil(input_size / cell_size)`` pixels (7), and the shorter side of
the image must be at least ``max(λ)`` times that (28 px with the paper's scales; the paper's VOC photos have
smallest patches of about 94 px).
"""
from __future__ import annotations

import math
import os
from typing import Any, Sequence


def min_patch_side(backbone: Any) -> int:
    """The smallest patch side in image pixels that ``backbone`` (a :class:`midlevel_fast.backbones.Backbone`)
    scores meaningfully: one image pixel per trunk cell (module docstring)."""
    return math.ceil(backbone.input_size / backbone.cell_size)


def min_image_side(backbone: Any, scales: Sequence[float]) -> int:
    """The smallest shorter side, in pixels, of an image that ``backbone`` scores at ``scales``."""
    return math.ceil(min_patch_side(backbone) * max(float(s) for s in scales) - 1e-9)


def check_image_size(width: int, height: int, scales: Sequence[float], backbone: Any, source: Any = None) -> None:
    """Raises ``ValueError`` naming the image (``source`` when it is a path), its size and the minimum when the
    smallest patch of a ``width``×``height`` image at ``scales`` would be below :func:`min_patch_side`."""
    lam = max(float(s) for s in scales)
    need = min_patch_side(backbone)
    side = min(width, height) / lam
    if side >= need:
        return
    what = f"image file {os.fspath(source)!r}" if isinstance(source, (str, os.PathLike)) else "image"
    raise ValueError(f"{what} is {width}x{height} pixels, too small to score: its shorter side must be at least "
                     f"{min_image_side(backbone, scales)} px (its smallest patches, min(W, H)/{lam:g}, would be "
                     f"{side:.3g} px wide, below the {need} px of one pixel per trunk cell of "
                     f"{getattr(backbone, 'name', 'the backbone')})")
