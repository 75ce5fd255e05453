"""The paper's patch labels and background resampling (Oquab et al., CVPR 2014, section 3.2 and figure 4).

Convention: boxes are ``(x0, y0, x1, y1)`` in continuous pixel coordinates; pixel ``i`` covers ``[i, i+1)``;
``|·|`` is area, so boxes that only touch along an edge do not overlap.

A patch ``P`` *qualifies* for an object box ``B`` when ``|P∩B| ≥ 0.2|P|`` and ``|P∩B| ≥ 0.6|B|`` (boxes have
positive area, so a qualifying patch overlaps its object). Each patch then gets one label:

* qualifies for exactly one object, which is not difficult → that object's class ``0..C-1``;
* qualifies for two or more objects → ``DROPPED`` (the paper's "2 labels: delete"), read as the issue states
  it: two qualifying *objects*, even of the same class (the paper's condition (iii) counts objects, not
  classes, and a patch holding two instances is a clean example of neither). A second object that the patch
  merely overlaps without qualifying does not drop it;
* overlaps no object at all (``|P∩B| = 0`` for every ``B``) → ``BACKGROUND = num_classes``;
* overlaps some object but qualifies for none → ``DROPPED``. The paper labels only positives and patches away
  from every object; a patch that cuts through an object is neither a clean example of it nor background, and
  training on it as background would teach the head that object parts are background;
* qualifies only for a *difficult* object → ``DROPPED``. Difficult objects otherwise count like any other: they
  keep a patch out of the background and count toward "two objects". VOC neither rewards nor punishes difficult
  instances, so they are kept out of both the positives and the background.

The thresholds are compared as ``5·|P∩B| ≥ |P|`` and ``5·|P∩B| ≥ 3·|B|`` (0.2 = 1/5, 0.6 = 3/5) in float64,
with no inexact constant: for coordinates on a binary grid (whole, half or quarter pixels) every term is exact, so
a patch exactly on a boundary qualifies, as in the exact rational oracle of the tests (``tests/oracle/labels.py``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

DROPPED: int = -1


def checked_boxes(name: str, boxes: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``boxes`` as float64 ``(N, 4)`` on the CPU; ``ValueError`` naming ``name`` for a bad shape, a non-finite
    coordinate or an empty or inverted box."""
    b = torch.as_tensor(boxes).to(device="cpu", dtype=torch.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name} must be (N, 4) as (x0, y0, x1, y1), got shape {tuple(b.shape)}")
    if not torch.isfinite(b).all():
        raise ValueError(f"{name} contain non-finite coordinates")
    bad = ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        # A zero-area box makes area ratios and IoU meaningless, and an inverted one is a coordinate-order bug.
        raise ValueError(f"{name}[{i}] = {b[i].tolist()} is empty or inverted (need x1 > x0 and y1 > y0)")
    return b


def _area(b: torch.Tensor) -> torch.Tensor:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _intersection(p: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    iw = (torch.minimum(p[:, None, 2], b[None, :, 2]) - torch.maximum(p[:, None, 0], b[None, :, 0])).clamp(min=0)
    ih = (torch.minimum(p[:, None, 3], b[None, :, 3]) - torch.maximum(p[:, None, 1], b[None, :, 1])).clamp(min=0)
    return iw * ih  # (N, M)


def _qualification(p: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    inter = _intersection(p, b)
    qualifies = (inter > 0) & (5 * inter >= _area(p)[:, None]) & (5 * inter >= 3 * _area(b)[None, :])
    return inter > 0, qualifies


def qualification(patch_boxes: torch.Tensor | np.ndarray,
                  object_boxes: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool ``(N, M)`` matrices ``(overlaps, qualifies)``: ``|P∩B| > 0``, and the paper's two overlap
    conditions (see the module docstring). The building block of :func:`patch_labels` and of the multi-label
    objective in :mod:`midlevel_fast.training.patches`."""
    return _qualification(checked_boxes("patch_boxes", patch_boxes), checked_boxes("object_boxes", object_boxes))


def box_iou(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Intersection over union, float64 ``(N, M)``, of positive-area boxes ``a (N, 4)`` and ``b (M, 4)``
    (``(x0, y0, x1, y1)``, ``ValueError`` otherwise)."""
    p, q = checked_boxes("a", a), checked_boxes("b", b)
    inter = _intersection(p, q)
    return inter / (_area(p)[:, None] + _area(q)[None, :] - inter)


def patch_labels(
    patch_boxes: torch.Tensor | np.ndarray,
    object_boxes: torch.Tensor | np.ndarray,
    object_classes: torch.Tensor | np.ndarray,
    num_classes: int,
    difficult: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Label each patch by the rules of the module docstring: int64 ``(N,)`` with a class index ``0..C-1``,
    ``BACKGROUND = num_classes`` or ``DROPPED = -1``.

    ``patch_boxes (N, 4)``, ``object_boxes (M, 4)``: positive-area boxes (``ValueError`` otherwise); patches may
    leave the image. ``object_classes (M,)`` int in ``[0, num_classes)``; ``difficult (M,)`` bool, default all
    false. With no objects every patch is background.
    """
    p = checked_boxes("patch_boxes", patch_boxes)
    b = checked_boxes("object_boxes", object_boxes)
    cls = torch.as_tensor(object_classes).to(device="cpu").reshape(-1)
    if len(cls) and (cls.dtype.is_floating_point or cls.dtype == torch.bool):
        raise ValueError(f"object_classes must be integers, got {cls.dtype}")
    if len(cls) != len(b):
        raise ValueError(f"object_classes has {len(cls)} entries for {len(b)} object boxes")
    if num_classes < 1 or (len(cls) and (cls.min() < 0 or cls.max() >= num_classes)):
        raise ValueError(f"object_classes must lie in [0, num_classes={num_classes})")
    diff = (torch.zeros(len(b), dtype=torch.bool) if difficult is None
            else torch.as_tensor(difficult).to(device="cpu", dtype=torch.bool).reshape(-1))
    if len(diff) != len(b):
        raise ValueError(f"difficult has {len(diff)} entries for {len(b)} object boxes")

    overlaps, qualifies = _qualification(p, b)
    labels = torch.full((len(p),), DROPPED, dtype=torch.int64)
    labels[~overlaps.any(dim=1)] = num_classes
    if len(b):
        first = qualifies.to(torch.uint8).argmax(dim=1)  # the only qualifying object where exactly one qualifies
        single = (qualifies.sum(dim=1) == 1) & ~diff[first]
        labels[single] = cls.long()[first[single]]
    return labels


def resample_background(
    labels: torch.Tensor | np.ndarray,
    num_classes: int,
    fraction: float = 0.1,
    seed: int | torch.Generator = 0,
) -> torch.Tensor:
    """Keep mask bool ``(N,)`` for training: every positive, a random ``fraction`` of the background, no
    ``DROPPED`` patch.

    Exactly ``floor(fraction · n_bg + 0.5)`` background patches are kept (nearest integer, halves up), chosen
    uniformly without replacement by ``torch.randperm`` on a CPU generator seeded with ``seed`` (or the given
    generator, which is advanced), so the same inputs give the same mask. With no background nothing is added.
    Rounding is per call: call it once on the labels of a whole split to get the fraction over the split.
    """
    lab = torch.as_tensor(labels).to(device="cpu").reshape(-1)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if len(lab) and (lab.min() < DROPPED or lab.max() > num_classes):
        raise ValueError(f"labels must lie in [{DROPPED}, {num_classes}] (DROPPED, classes, BACKGROUND)")
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    keep = (lab >= 0) & (lab < num_classes)
    background = (lab == num_classes).nonzero().flatten()
    n_keep = math.floor(fraction * len(background) + 0.5)
    keep[background[torch.randperm(len(background), generator=generator)[:n_keep]]] = True
    return keep
