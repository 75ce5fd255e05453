"""Oracle of :func:`midlevel_fast.training.labels.patch_labels`: patch by patch, object by object, in exact
rational arithmetic. Shares no code with the package."""
from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import torch

# The package's label for a patch left out of training (midlevel_fast.training.labels.DROPPED).
DROPPED = -1


def patch_labels_reference(
    patch_boxes: Sequence[Sequence[float]] | torch.Tensor,
    object_boxes: Sequence[Sequence[float]] | torch.Tensor,
    object_classes: Sequence[int] | torch.Tensor,
    num_classes: int,
    difficult: Sequence[bool] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Patch-by-patch, object-by-object loop for :func:`midlevel_fast.training.labels.patch_labels`, in exact rational
    arithmetic (every float is converted to a ``Fraction``), so the oracle has no rounding at all and states the
    thresholds as written in the paper: ``|P∩B| ≥ 0.2|P|`` and ``|P∩B| ≥ 0.6|B|``."""
    patches = [[Fraction(float(v)) for v in box] for box in torch.as_tensor(patch_boxes, dtype=torch.float64).tolist()]
    objects = [[Fraction(float(v)) for v in box] for box in torch.as_tensor(object_boxes, dtype=torch.float64).tolist()]
    classes = [int(c) for c in torch.as_tensor(object_classes).reshape(-1).tolist()]
    flags = [False] * len(objects) if difficult is None else [bool(d) for d in torch.as_tensor(difficult).tolist()]
    for name, boxes in (("patch_boxes", patches), ("object_boxes", objects)):
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            if not (x1 > x0 and y1 > y0):
                raise ValueError(f"{name}[{i}] is empty or inverted")

    labels = []
    for px0, py0, px1, py1 in patches:
        patch_area = (px1 - px0) * (py1 - py0)
        overlapping = 0
        qualified = []
        for (bx0, by0, bx1, by1), cls, hard in zip(objects, classes, flags):
            inter = max(Fraction(0), min(px1, bx1) - max(px0, bx0)) * max(Fraction(0), min(py1, by1) - max(py0, by0))
            if inter > 0:
                overlapping += 1
                if inter >= Fraction(1, 5) * patch_area and inter >= Fraction(3, 5) * (bx1 - bx0) * (by1 - by0):
                    qualified.append((cls, hard))
        if overlapping == 0:
            labels.append(num_classes)
        elif len(qualified) == 1 and not qualified[0][1]:
            labels.append(qualified[0][0])
        else:
            labels.append(DROPPED)
    return torch.tensor(labels, dtype=torch.int64)
