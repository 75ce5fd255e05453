"""The pointing game (Zhang et al., "Top-down neural attention by excitation backprop", 2016) as TorchRay's
``PointingGame`` with ``tolerance=15`` defines it, on VOC annotations (:mod:`midlevel_fast.datasets.voc`).

For every image and every class with at least one non-difficult object in it (an image whose objects of a class
are all difficult is skipped for that class; absent classes are not played), a point ``(x, y)`` is a **hit** when
it lies within ``tolerance`` pixels of the class's ground-truth mask, else a **miss**. TorchRay's rules, exactly:

* the mask is the union of the boxes of *all* the class's objects in the image, difficult ones included: pixel
  ``(i, j)`` is in it when its centre ``(j + 0.5, i + 0.5)`` lies in a box (for VOC's integer boxes, the
  1-based inclusive pixels ``xmin..xmax``, as TorchRay's ``voc_as_mask``), inside the image;
* hit: some mask pixel has ``distance(centre, point)² < tolerance²`` (strict). TorchRay compares pixel indices
  with an integer point (``u``, ``v``); our continuous ``(x, y)`` is its ``(u + 0.5, v + 0.5)``, the centre of the
  pixel the point names, so a point at a pixel centre scores as TorchRay scores that pixel;
* per-class accuracy ``hits / max(hits + misses, 1)``; the accuracy is the mean over all classes (a class never
  played counts as 0, as in TorchRay; every VOC class is played on VOC val).

The distance to a box's pixel centres is computed per axis (the centres form a lattice), not pixel by pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from midlevel_fast.ops.aggregate.schema import covered_range
from midlevel_fast.datasets.voc import VOC_CLASSES, VocImage, image_labels

# TorchRay's PointingGame default, used in the excitation-backprop paper and its benchmarks.
TOLERANCE = 15


@dataclass
class PointingResult:
    """Hits and misses per class of ``class_names`` (int64 ``(C,)`` each)."""

    class_names: list[str]
    hits: np.ndarray
    misses: np.ndarray

    @property
    def class_accuracy(self) -> np.ndarray:
        """``(C,)`` float64 ``hits / max(hits + misses, 1)``."""
        return self.hits / np.maximum(self.hits + self.misses, 1)

    @property
    def accuracy(self) -> float:
        """The mean of :attr:`class_accuracy` over all classes (in [0, 1])."""
        return float(self.class_accuracy.mean())


def is_hit(point: Sequence[float], boxes: torch.Tensor | Sequence[Sequence[float]], height: int, width: int,
           tolerance: float = TOLERANCE) -> bool:
    """Whether ``point (x, y)`` is within ``tolerance`` of the mask of ``boxes (M, 4)`` ``(x0, y0, x1, y1)`` on a
    ``height × width`` image (module docstring). No box, or boxes covering no pixel centre, give a miss."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    if len(point) != 2 or not all(np.isfinite(float(v)) for v in point):
        raise ValueError(f"point must be a finite (x, y), got {point!r}")
    b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    gaps = []
    for lo, hi, n, p in ((b[:, 0], b[:, 2], width, float(point[0])), (b[:, 1], b[:, 3], height, float(point[1]))):
        first, stop = covered_range(lo, hi, n)  # the mask's pixels on this axis: first .. stop - 1
        # In pixel-index units (pixel j's centre at j) the nearest mask centre is round(p - 0.5), clamped.
        nearest = torch.full_like(lo, float(round(p - 0.5))).clamp(min=first.double(), max=stop.double() - 1)
        gaps.append(torch.where(stop > first, (p - 0.5) - nearest, torch.tensor(float("inf"), dtype=torch.float64)))
    return bool(((gaps[0] ** 2 + gaps[1] ** 2) < tolerance ** 2).any())


def played_classes(image: VocImage, classes: Sequence[str] = VOC_CLASSES) -> list[str]:
    """The classes ``image`` is played for: those with at least one non-difficult object, in ``classes`` order."""
    positives, _ = image_labels(image, classes)
    return [c for c, p in zip(classes, positives) if p]


def pointing_game(images: Sequence[VocImage], points: Sequence[Mapping[str, Sequence[float]]],
                  classes: Sequence[str] = VOC_CLASSES, tolerance: float = TOLERANCE) -> PointingResult:
    """Plays every ``(image, class)`` of :func:`played_classes`; ``points[i]`` maps class names to the ``(x, y)``
    pointed at in ``images[i]`` (image pixels; other classes are ignored). A played class without a point raises
    ``ValueError`` naming the image and the class."""
    if len(points) != len(images):
        raise ValueError(f"need one mapping of points per image, got {len(points)} for {len(images)} images")
    index = {c: i for i, c in enumerate(classes)}
    hits = np.zeros(len(classes), dtype=np.int64)
    misses = np.zeros(len(classes), dtype=np.int64)
    for img, pts in zip(images, points):
        for name in played_classes(img, classes):
            if name not in pts:
                raise ValueError(f"{img.image_id}: no point for class {name!r}, which has a non-difficult object")
            boxes = [o.box for o in img.objects if o.name == name]
            if is_hit(pts[name], boxes, img.height, img.width, tolerance):
                hits[index[name]] += 1
            else:
                misses[index[name]] += 1
    return PointingResult(list(classes), hits, misses)

