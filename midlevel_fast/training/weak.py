"""Learning from image-level labels (``TrainConfig.supervision = "image"``): the head trains on all the cached
windows of each image with only the image's classes as targets (Oquab, Bottou, Laptev and Sivic, CVPR 2015).

One training step takes a batch of *images* (``TrainConfig.images_per_batch``), not of patches:

1. the head's class probabilities of every window of those images (its softmax with background, or its
   per-class sigmoids; dropout on, as in box training);
2. per image and class, the windows pooled into one probability ``P`` (:func:`midlevel_fast.training.pooling.
   pool_windows`: global max, power mean or log-sum-exp);
3. :func:`image_loss`: the binary cross-entropy of ``P`` against the image's label, summed over the classes and
   averaged over the images. A class the image shows only as VOC "difficult" objects is left out of its loss, as
   the devkit leaves it out of AP.

The background output of the softmax is never a target: it learns only from the other classes' windows being
pushed down. Training rows are an :class:`midlevel_fast.training.patches.EvalSet` (every window of every image,
with its image-level ground truth), the loop and its schedule :func:`midlevel_fast.training.train.train_head`'s.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from midlevel_fast.model.head import class_probabilities
from midlevel_fast.runtime.train_ddp import Replica
from midlevel_fast.training.patches import EvalSet
from midlevel_fast.training.pooling import pool_windows

# PyTorch's binary_cross_entropy clamps each log term at -100; the same here, so both agree everywhere.
_LOG_FLOOR = -100.0
# log(1 - 2^-24): the largest log-probability below 1 in float32.
_NEAR_ONE = math.log1p(-2.0 ** -24)

Step = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


def image_loss(log_pooled: torch.Tensor, positives: torch.Tensor, ignore: torch.Tensor,
               global_batch: tuple[int, int] | None = None) -> torch.Tensor:
    """Binary cross-entropy of the pooled probabilities ``P = exp(log_pooled)`` ``(B, C)`` against ``positives``
    ``(B, C)`` (1 present, 0 absent), terms where ``ignore`` ``(B, C)`` is set left out; summed over the classes and
    averaged over the ``B`` images: ``F.binary_cross_entropy(P, y, reduction="sum") / B`` without ignored terms,
    except where ``P`` is within ``2^-24`` of 1 (a negative's term is then ``-log 2^-24 = 16.6``, not up to 100).
    ``global_batch``: as in :func:`midlevel_fast.training.loss.batch_loss`."""
    if not (log_pooled.shape == positives.shape == ignore.shape) or log_pooled.ndim != 2:
        raise ValueError(f"need (B, C) pooled values, labels and ignore masks, got {tuple(log_pooled.shape)}, "
                         f"{tuple(positives.shape)} and {tuple(ignore.shape)}")
    # The value floored as PyTorch's, the gradient kept: a positive image whose windows all say no still learns.
    log_p = log_pooled + (log_pooled.clamp(min=_LOG_FLOOR) - log_pooled).detach()
    # log(1 - P) = log(-expm1(log P)): exact for P near 0, where 1 - exp() would lose it. Where P rounds to 1 in
    # float32 its gradient is infinite (0 * inf = NaN in the backward pass): there the term stops at log(2^-24).
    below_one = log_pooled < _NEAR_ONE
    log_not_p = torch.log(-torch.expm1(torch.where(below_one, log_pooled, _NEAR_ONE))).clamp(min=_LOG_FLOOR)
    y = positives.to(log_p.dtype)
    terms = -(y * log_p + (1 - y) * log_not_p)
    summed = terms.masked_fill(ignore.bool(), 0.0).sum()
    rows, world_size = global_batch if global_batch is not None else (len(log_pooled), 1)
    return summed * (world_size / rows)


def image_step(data: EvalSet, objective: str, pooling: str, k: float, r: float, bf16: bool,
               replica: Replica | None) -> Step:
    """The loss of one batch of image indices into ``data``: ``step(model, images) -> loss`` (a replica computes
    its share of the images, :meth:`midlevel_fast.runtime.train_ddp.Replica.groups`)."""
    num_classes = data.positives.shape[1]
    sizes = torch.bincount(data.image_index, minlength=len(data.positives))
    if not bool((sizes > 0).all()):
        raise ValueError(f"{int((sizes == 0).sum())} training images have no cached window")
    if not bool((data.image_index[1:] >= data.image_index[:-1]).all()):
        raise ValueError("the windows of each training image must be contiguous, images in order")
    starts = torch.cumsum(sizes, 0) - sizes
    positives = torch.from_numpy(data.positives).float()
    ignore = torch.from_numpy(data.ignore)
    world = 1 if replica is None else replica.world_size

    def step(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        mine = images if replica is None else replica.groups(images, sizes[images])
        counts = sizes[mine]
        # Rows of every window of the images, image by image.
        rows = torch.repeat_interleave(starts[mine] - torch.cumsum(counts, 0) + counts, counts)
        rows += torch.arange(int(counts.sum()))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(data.features[rows].float())
        log_probs = class_probabilities(logits, objective, num_classes, log=True)
        width = int(counts.max()) if len(counts) else 1
        mask = torch.arange(width)[None, :] < counts[:, None]
        padded = log_probs.new_zeros(len(mine), width, num_classes)
        padded[mask] = log_probs
        pooled = pool_windows(padded, mask, pooling, k, r)
        return image_loss(pooled, positives[mine], ignore[mine], (len(images), world))

    return step
