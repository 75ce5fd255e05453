"""The rows the adaptation head trains and is evaluated on, read from a feature cache (Oquab et al., section 3.2).

* training rows (:func:`patch_set`): each cached patch of each training image, labelled by
  :func:`midlevel_fast.training.labels.patch_labels`, with a seeded random ``bg_fraction`` (10 %) of the
  background kept (:func:`midlevel_fast.training.labels.resample_background`, one draw over the whole split).
  With the ``"multilabel"`` objective (the paper's suggested fix for co-occurring objects) a patch that qualifies
  for objects of several classes is kept with all of them as a multi-hot target instead of being dropped;
* evaluation rows (:func:`eval_set`): every cached patch of each evaluation image, with the images' VOC
  classification ground truth; :func:`labelled_set` for any image-level labels (they are also the training rows
  of image-level supervision, :mod:`midlevel_fast.training.weak`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from midlevel_fast.cache.feature_cache import FeatureCache
from midlevel_fast.training.labels import DROPPED, patch_labels, qualification, resample_background
from midlevel_fast.datasets.voc import VocImage, image_labels, object_arrays


@dataclass
class PatchSet:
    """Training rows: ``features`` float16 ``(R, F)``; ``targets`` int64 ``(R,)`` (softmax, class ``C`` is
    background) or float32 ``(R, C + 1)`` multi-hot (multilabel); ``counts`` per class (index ``C``:
    background kept)."""

    features: torch.Tensor
    targets: torch.Tensor
    counts: np.ndarray


@dataclass
class EvalSet:
    """All cached patches of evaluation images: ``features`` float16 ``(P, F)``, ``image_index`` int64
    ``(P,)`` and per-image VOC ground truth ``positives``/``ignore`` bool ``(n, C)``."""

    features: torch.Tensor
    image_index: torch.Tensor
    positives: np.ndarray
    ignore: np.ndarray


def patch_set(cache: FeatureCache, images: Sequence[VocImage], classes: Sequence[str], bg_fraction: float = 0.1,
              seed: int = 0, objective: str = "softmax") -> PatchSet:
    """Labels and resamples the cached patches of ``images`` (see the module docstring)."""
    num_classes = len(classes)
    cached, labels, hots = [], [], []
    for img in images:
        c = cache.load(img.image_id)
        boxes, cls, difficult = object_arrays(img, classes)
        if objective == "softmax":
            labels.append(patch_labels(c.boxes, boxes, cls, num_classes, difficult))
        else:
            overlaps, qualifies = qualification(c.boxes, boxes)
            clean = (qualifies & ~difficult[None, :]).double()
            hot = torch.zeros(len(c.boxes), num_classes + 1)
            hot[:, :num_classes] = (clean @ F.one_hot(cls, num_classes).double()).clamp(max=1).float()
            background = ~overlaps.any(dim=1)
            hot[background, num_classes] = 1
            # Same patches as the softmax labelling, except that several clean objects are allowed.
            positive = hot[:, :num_classes].any(dim=1) & ~(qualifies & difficult[None, :]).any(dim=1)
            labels.append(torch.where(background, num_classes, torch.where(positive, 0, DROPPED)))
            hots.append(hot)
        cached.append(c)
    # One draw over the whole split, so that exactly bg_fraction of its background is kept.
    keep = resample_background(torch.cat(labels), num_classes, bg_fraction, seed)
    feats, start = [], 0
    for c in cached:
        mask = keep[start: start + len(c.boxes)].numpy()
        feats.append(torch.from_numpy(np.asarray(c.features[mask])))
        start += len(c.boxes)
    if objective == "softmax":
        targets = torch.cat(labels)[keep]
        counts = torch.bincount(targets, minlength=num_classes + 1).numpy()
    else:
        targets = torch.cat(hots)[keep]
        counts = targets.sum(dim=0).long().numpy()
    return PatchSet(torch.cat(feats), targets, counts)


def merge_patch_sets(sets: Sequence[PatchSet]) -> PatchSet:
    """One training set from several (e.g. the dense windows and the grid crops of the same images), rows in order."""
    if not sets:
        raise ValueError("no patch set to merge")
    return PatchSet(torch.cat([s.features for s in sets]), torch.cat([s.targets for s in sets]),
                    sum((s.counts for s in sets[1:]), sets[0].counts.copy()))


def eval_set(cache: FeatureCache, images: Sequence[VocImage], classes: Sequence[str]) -> EvalSet:
    """Every cached patch of ``images`` with their images' VOC ground truth."""
    pos, ign = zip(*[image_labels(img, classes) for img in images])
    return labelled_set(cache, [img.image_id for img in images], np.stack(pos), np.stack(ign))


def labelled_set(cache: FeatureCache, image_ids: Sequence[str], positives: np.ndarray,
                 ignore: np.ndarray) -> EvalSet:
    """Every cached patch of ``image_ids``, image by image, with their image-level labels ``positives``/``ignore``
    bool ``(len(image_ids), C)``."""
    feats, index = [], []
    for i, image_id in enumerate(image_ids):
        cached = cache.load(image_id)
        feats.append(torch.from_numpy(np.array(cached.features)))
        index.append(torch.full((len(cached.boxes),), i, dtype=torch.int64))
    return EvalSet(torch.cat(feats), torch.cat(index), np.asarray(positives, bool), np.asarray(ignore, bool))
