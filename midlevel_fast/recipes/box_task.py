"""Training a head on given boxes, as ``midlevel-fast train --task boxes`` runs it (Oquab et al., section 5: "both
training and testing are performed using a single square patch per sample, centered on the person bounding box"):

* one patch per sample, the square of :func:`midlevel_fast.scoring.boxes.square_patches` (side ``context`` times
  the box's longer side), mirror-padded where it leaves the image, exactly as :func:`score_boxes` crops it;
* its features cached like the object task's (:mod:`midlevel_fast.cache.feature_cache`: resumable, atomic), keyed by
  the sample (image content + box): the mid-level vector, or with ``unfreeze="top"`` the input of the backbone's
  top (:mod:`midlevel_fast.training.unfreeze`), in caches of modes :data:`BOX_CACHE_MODES`;
* the same head and schedule (:func:`midlevel_fast.training.train.train_head`), validated each epoch by mAP, ties
  (a small validation set at 100 %) broken by the lower validation log-loss;
* evaluation (:func:`evaluate_boxes`): per-class AP, accuracy and the mean log-loss of the true class.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from midlevel_fast.backbones import Backbone, resolve_backbone
from midlevel_fast.backbones.top import load_top
from midlevel_fast.model.head import HeadInfo, save_head
from midlevel_fast.scoring.boxes import patch_crops, square_patches
from midlevel_fast.datasets.box_samples import BoxSample, sample_arrays
from midlevel_fast.cache.feature_cache import CacheConfig, FeatureCache
from midlevel_fast.cache.build import build_cache, default_cache_root, open_cache
from midlevel_fast.metrics.average_precision import mean_average_precision
from midlevel_fast.training.evaluate import patch_probabilities
from midlevel_fast.training.patches import EvalSet, PatchSet
from midlevel_fast.training.train import TrainConfig, TrainResult, train_head
from midlevel_fast.training.unfreeze import TopAndHead

# Cache modes of one square patch per sample: its mid-level vector, or the input of the backbone's top.
BOX_CACHE_MODES: tuple[str, ...] = ("square", "square-top")
# The paper mirrors the image where the square leaves it.
TRAIN_PADDING = "reflect"
# One patch per box gives hundreds of rows where the object task has ~100k patches: batches of 16 rather than 256
# give the schedule enough steps (180 samples: 12 steps per epoch instead of 1).
BOX_BATCH_SIZE = 16
# Log-loss floor: a true-class probability below it counts as this (a head sure of the wrong class is not -inf).
LOG_LOSS_FLOOR = 1e-12


def box_cache(backbone: Backbone, context: float = 1.0, top: bool = False,
              cache_base: str | os.PathLike | None = None) -> FeatureCache:
    """The cache of square-patch features (``top``: of the top's inputs, flattened) of ``backbone`` for
    ``context``; the config's ``scales`` holds ``[context]``, its grid fields are unused."""
    size = int(np.prod(backbone.top_input_shape)) if top else backbone.feature_dim
    config = CacheConfig(backbone.name, BOX_CACHE_MODES[int(top)], [float(context)], 0.0, None, size)
    return open_cache(cache_base or default_cache_root(), config)


def fill_box_cache(cache: FeatureCache, backbone: Backbone, samples: Sequence[BoxSample],
                   progress: bool = True) -> FeatureCache:
    """Caches the square patch of every sample missing from ``cache`` (see the module docstring)."""
    top = cache.config.mode == BOX_CACHE_MODES[1]
    context = cache.config.scales[0]
    by_id = {s.sample_id: s for s in samples}

    def extract(img: np.ndarray, sample_id: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = img.shape[:2]
        box = by_id[sample_id].box or (0.0, 0.0, float(w), float(h))
        patch = square_patches([box], context)
        crop = patch_crops(img, patch, backbone, TRAIN_PADDING)
        feats = backbone.below_top(crop).flatten(1) if top else backbone(crop)
        return feats, patch.float(), torch.zeros(1, dtype=torch.int64)

    return build_cache(cache, [(s.sample_id, s.path) for s in samples], extract, progress)


def box_rows(cache: FeatureCache, samples: Sequence[BoxSample], classes: Sequence[str],
             objective: str = "softmax") -> tuple[PatchSet, EvalSet]:
    """The cached patches of ``samples`` as training rows (targets: the sample's class; one-hot with the background
    column for ``"multilabel"``) and as an evaluation set of one-patch "images"."""
    labels = torch.from_numpy(sample_arrays(samples, classes))
    feats = torch.from_numpy(np.concatenate([np.asarray(cache.load(s.sample_id).features) for s in samples]))
    n, c = len(samples), len(classes)
    targets = labels if objective == "softmax" else torch.nn.functional.one_hot(labels, c + 1).float()
    counts = np.bincount(labels.numpy(), minlength=c + 1)
    positives = np.zeros((n, c), bool)
    positives[np.arange(n), labels.numpy()] = True
    return (PatchSet(feats, targets, counts),
            EvalSet(feats, torch.arange(n), positives, np.zeros_like(positives)))


@dataclass
class BoxEvaluation:
    """Per-class ``ap`` (VOC2010 area) and ``map``, ``accuracy`` (the most probable class is the true one) and
    ``log_loss`` (mean of ``-log p(true class)``, the class probabilities renormalised over the classes, floored at
    :data:`LOG_LOSS_FLOOR`) of ``n`` samples, in [0, 1] (log-loss in nats)."""

    ap: np.ndarray
    map: float
    accuracy: float
    log_loss: float
    n: int


def evaluate_probabilities(probs: np.ndarray, labels: np.ndarray) -> BoxEvaluation:
    """:class:`BoxEvaluation` of class probabilities ``probs (n, C)`` (any positive scores: they are renormalised)
    against integer ``labels (n,)``."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    positives = np.zeros(probs.shape, bool)
    positives[np.arange(len(labels)), labels] = True
    ap, mean_ap = mean_average_precision(probs, positives, np.zeros_like(positives), "voc2010")
    share = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-300)
    true = np.maximum(share[np.arange(len(labels)), labels], LOG_LOSS_FLOOR)
    return BoxEvaluation(ap, float(mean_ap), float(np.mean(probs.argmax(axis=1) == labels)),
                         float(-np.mean(np.log(true))), len(labels))


def evaluate_boxes(model: torch.nn.Module, data: EvalSet, objective: str) -> BoxEvaluation:
    """:class:`BoxEvaluation` of ``model`` (a head, or a :class:`TopAndHead` on top inputs) on one-patch ``data``."""
    probs = patch_probabilities(model.eval(), data.features, objective, data.positives.shape[1]).numpy()
    return evaluate_probabilities(probs, data.positives.argmax(axis=1))


@dataclass
class BoxTraining:
    """What :func:`train_box_head` did: the training ``result``, the ``info`` written with the head, the training
    ``samples``, the seconds spent computing missing patches (``cache_seconds``, 0 when all were cached) and the
    validation evaluation (``None`` without validation samples)."""

    result: TrainResult
    info: HeadInfo
    samples: int
    cache_seconds: float
    val: BoxEvaluation | None


def train_box_head(train: Sequence[BoxSample], classes: Sequence[str], out: str | os.PathLike,
                   val: Sequence[BoxSample] | None = None, backbone: str | Backbone = "efficientnet_lite0",
                   config: TrainConfig = TrainConfig(), context: float = 1.0,
                   cache_base: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
                   source: dict | None = None, log: Callable[[str], None] | None = print) -> BoxTraining:
    """Trains a head on one square patch per ``train`` sample (``config.unfreeze="top"``: with the backbone's top;
    ``config.batch_size``: :data:`BOX_BATCH_SIZE` suits a few hundred samples),
    validating each epoch on ``val``, and writes it to ``out`` (weights as ``dtype``; ``source`` goes to the
    head's ``extra``). The head file is an ordinary one: :func:`score_boxes` and :func:`score_image` use it."""
    if config.supervision != "boxes" or config.consistency:
        raise ValueError("box training labels each sample's patch: supervision 'boxes', no consistency term")
    if not train:
        raise ValueError("no training samples")
    bb = resolve_backbone(backbone)
    top = config.unfreeze == "top"
    cache = box_cache(bb, context, top, cache_base)
    everything = list(train) + list(val or [])
    missing = sum(s.sample_id not in cache for s in everything)
    t0 = time.perf_counter()
    fill_box_cache(cache, bb, everything)
    cache_seconds = time.perf_counter() - t0 if missing else 0.0
    rows, _ = box_rows(cache, train, classes, config.objective)
    val_set = box_rows(cache, val, classes, config.objective)[1] if val else None
    if log:
        log(f"{len(train)} training samples, one {context:g}x square patch each"
            + (f" ({missing} computed in {cache_seconds:.0f} s)" if missing else " (all cached)"))
    # A small validation set often reaches 100 % mAP within an epoch or two; among such epochs keep the one with the
    # lowest validation log-loss rather than the first (still-actions: log-loss 0.77 -> see docs/actions.md).
    tie_break = None if val_set is None else (lambda m: -evaluate_boxes(m, val_set, config.objective).log_loss)
    result = train_head(rows, len(classes), config, val_set, log=log, backbone=bb if top else None,
                        tie_break=tie_break)
    if top and result.top is None:
        raise RuntimeError("train_head returned no top weights although unfreeze='top' trained one")
    trained = (TopAndHead(load_top(bb, result.top, "the trained top"), result.head) if top and result.top is not None
               else result.head)
    evaluation = evaluate_boxes(trained, val_set, config.objective) if val_set is not None else None
    info = HeadInfo(backbone=bb.name, class_names=list(classes), k=config.k, layers=config.layers,
                    hidden=config.hidden, top=result.top,
                    extra={"train": asdict(config), "task": "boxes", "context": context, "square": True,
                           "padding_mode": TRAIN_PADDING, **(source or {}), "best_epoch": result.best_epoch,
                           "val_map": None if math.isnan(result.best_map) else result.best_map,
                           "objective": config.objective})
    save_head(out, result.head, info, dtype=dtype)
    return BoxTraining(result, info, len(train), cache_seconds, evaluation)
