"""Scoring given boxes (Oquab et al., section 5: the action of a person whose box is known): one square patch per
box, centred on it, cropped (mirroring the image where the square leaves it), resized to the backbone's input and
classified by the head.

Convention: boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates of the (EXIF-oriented) image, pixel
``i`` covering ``[i, i + 1)``. The patch of a box of width ``w`` and height ``h`` centred at ``(cx, cy)`` is the
square of side ``context · max(w, h)`` centred there (``square=True``, the paper's), or the box itself scaled by
``context`` about its centre (``square=False``, resized to the square input without keeping the aspect).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from midlevel_fast.backbones.layout import BackboneLike
from midlevel_fast.io.image_io import load_image
from midlevel_fast.model.classifier import PatchClassifier, default_model
from midlevel_fast.ops.crop_resize import as_boxes, crop_resize
from midlevel_fast.model.presence import presence_for

# Boxes per crop_resize + forward: bounds the patches' memory (0.6 MB each in float32) for long box lists.
BOX_BATCH = 256


def square_patches(boxes: Any, context: float = 1.0, square: bool = True) -> torch.Tensor:
    """``(N, 4)`` float64 patch boxes of ``boxes`` ``(N, 4)`` (see the module docstring). ``ValueError`` naming the
    box for a non-finite, inverted or empty box (``x1 <= x0`` or ``y1 <= y0``) and for ``context`` not > 0."""
    if not (isinstance(context, (int, float)) and np.isfinite(context) and context > 0):
        raise ValueError(f"context must be a finite number > 0, got {context!r}")
    b = as_boxes(boxes)
    # as_boxes has refused non-finite and inverted boxes; a box must also have an area to centre a patch on.
    for i, (x0, y0, x1, y1) in enumerate(b.tolist()):
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"boxes[{i}] = {[x0, y0, x1, y1]} is empty: boxes are (x0, y0, x1, y1) with x1 > x0 and "
                             "y1 > y0")
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    if square:
        w = h = torch.maximum(w, h)
    half_w, half_h = context * w / 2, context * h / 2
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1)


def patch_crops(image: Any, patches: torch.Tensor, backbone: BackboneLike,
                padding_mode: str = "reflect") -> torch.Tensor:
    """``(N, 3, input_size, input_size)`` channels-last float32 inputs of ``backbone`` for the ``patches`` of
    :func:`square_patches` on ``image`` (uint8 HWC): cropped, resized with antialiasing and normalised in one
    ``crop_resize``, filled outside the image by ``padding_mode``. The crops of :func:`score_boxes` and of the
    training cache (:mod:`midlevel_fast.recipes.box_task`) alike."""
    crops = crop_resize(image, patches, size=backbone.input_size, mean=backbone.mean, std=backbone.std,
                        padding_mode=padding_mode)
    return crops.contiguous(memory_format=torch.channels_last)


@dataclass
class BoxScores:
    """Class probabilities of given boxes.

    Attributes:
        class_names: the reported classes (background excluded).
        probs: ``(N, C)`` float32 class probabilities of each box's patch (softmax over the head's outputs, or
            per-class sigmoids for multi-label heads).
        boxes: ``(N, 4)`` float32 the patches actually cropped (:func:`square_patches`), in image coordinates.
        presence: ``(N, C)`` float32 calibrated probabilities when the head has a calibration for its ``k`` (the
            image calibration applied to the one-patch score ``p^k``), else ``None``.
    """

    class_names: list[str]
    probs: torch.Tensor
    boxes: torch.Tensor
    presence: torch.Tensor | None = None

    def best(self) -> list[tuple[str, float]]:
        """Per box, its most probable class and that probability."""
        values, idx = self.probs.max(dim=1)
        return [(self.class_names[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())]


def score_boxes(image: Any, boxes: Any, model: PatchClassifier | None = None, *, square: bool = True,
                padding_mode: str = "reflect", context: float = 1.0,
                device: str | torch.device | None = None) -> BoxScores:
    """Classifies each box of ``image`` from one patch (see the module docstring).

    ``image``: a path, PIL image, numpy HWC or torch CHW array (:func:`midlevel_fast.io.image_io.load_image`).
    ``boxes``: ``(N, 4)`` ``(x0, y0, x1, y1)``; a box may leave the image (its patch is padded) but must overlap
    it. ``model``: default :func:`midlevel_fast.model.classifier.default_model`. ``padding_mode``: how the patch is
    filled outside the image (``"reflect"`` mirrors, as the paper does; see :func:`midlevel_fast.crop_resize`).
    The patches are cropped with the fused antialiased ``crop_resize`` and classified in float32, up to
    :data:`BOX_BATCH` boxes per call."""
    model = default_model() if model is None else model
    img = load_image(image)
    h, w = img.shape[:2]
    given = as_boxes(boxes)
    patches = square_patches(given, context, square)
    for i, (x0, y0, x1, y1) in enumerate(given.tolist()):
        if x0 >= w or y0 >= h or x1 <= 0 or y1 <= 0:
            raise ValueError(f"boxes[{i}] = {[x0, y0, x1, y1]} lies outside the {w}x{h} image")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    backbone = model.backbone
    probs = []
    with torch.inference_mode():
        for s in range(0, len(patches), BOX_BATCH):
            crops = patch_crops(img, patches[s: s + BOX_BATCH], backbone, padding_mode)
            probs.append(model.probabilities(backbone(crops.to(dev))).float().cpu())
    n = len(model.class_names)
    p = torch.cat(probs) if probs else torch.zeros(0, n)
    k = float(model.info.k)
    calibration = model.info.calibration
    presence = None
    if calibration is not None and len(p):
        presence = presence_for(p.pow(k), calibration, k)
    return BoxScores(model.class_names, p, patches.float(), presence)
