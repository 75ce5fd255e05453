"""Training a head from image-level labels, as ``midlevel-fast train --supervision image`` runs it: cache the dense
windows of the images (the same caches box training reads: VOC images already cached cost nothing new), train the
head on them (:mod:`midlevel_fast.training.weak`), write an ordinary head file.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from midlevel_fast.backbones import Backbone, resolve_backbone
from midlevel_fast.model.head import HeadInfo, save_head
from midlevel_fast.features.grid import PAPER_SCALES, PAPER_STEP
from midlevel_fast.cache.build import fill_cache
from midlevel_fast.training.evaluate import evaluate_head
from midlevel_fast.training.patches import labelled_set
from midlevel_fast.datasets.tags import TaggedImage, tag_arrays
from midlevel_fast.training.train import TrainConfig, TrainResult, train_head
from midlevel_fast.recipes.voc_run import TABLE_METHODS, voc_cache


@dataclass
class TaggedTraining:
    """What :func:`train_tagged_head` did: the training ``result``, the ``info`` written with the head, the number
    of training ``images`` and their ``windows``, the seconds spent computing missing features (``cache_seconds``,
    0 when all were cached) and per-class validation AP per method of
    :data:`midlevel_fast.recipes.voc_run.TABLE_METHODS` (empty without validation images)."""

    result: TrainResult
    info: HeadInfo
    images: int
    windows: int
    cache_seconds: float
    val_ap: dict[str, np.ndarray]


def train_tagged_head(train: Sequence[TaggedImage], classes: Sequence[str], out: str | os.PathLike,
                      val: Sequence[TaggedImage] | None = None, backbone: str | Backbone = "efficientnet_lite0",
                      mode: str = "dense", config: TrainConfig = TrainConfig(supervision="image"),
                      cache_base: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
                      source: dict | None = None, log: Callable[[str], None] | None = print) -> TaggedTraining:
    """Trains a head on the ``mode`` windows of the ``train`` images against their tags (``config.supervision``
    must be ``"image"``), validating each epoch on ``val`` (none when empty or ``None``), and writes it to ``out``
    (weights as ``dtype``; ``source``, e.g. the data set and splits, is recorded in the head's ``extra``). The head
    file has no box regression: image labels give no box to fit one on, so its detections are the raw windows."""
    if config.supervision != "image":
        raise ValueError(f"train_tagged_head trains from image labels: config.supervision must be 'image', got "
                         f"{config.supervision!r}")
    if not train:
        raise ValueError("no training images")
    bb = resolve_backbone(backbone)
    cache = voc_cache(bb, mode, cache_base)
    t0 = time.perf_counter()
    everything = list(train) + list(val or [])
    missing = sum(img.image_id not in cache for img in everything)
    fill_cache(cache, bb, [(img.image_id, img.path) for img in everything])
    cache_seconds = time.perf_counter() - t0 if missing else 0.0
    train_set = labelled_set(cache, [img.image_id for img in train], *tag_arrays(train, classes))
    val_set = labelled_set(cache, [img.image_id for img in val], *tag_arrays(val, classes)) if val else None
    if log:
        log(f"{len(train)} training images, {len(train_set.features)} {mode} windows"
            + (f" ({missing} images' features computed in {cache_seconds:.0f} s)" if missing else " (all cached)"))
    result = train_head(train_set, len(classes), config, val_set, log=log)
    info = HeadInfo(backbone=bb.name, class_names=list(classes), k=config.k, scales=list(PAPER_SCALES),
                    grid_step=PAPER_STEP, layers=config.layers, hidden=config.hidden,
                    extra={"train": asdict(config), "mode": mode, "supervision": "image", **(source or {}),
                           "best_epoch": result.best_epoch, "val_map": result.best_map,
                           "objective": config.objective})
    save_head(out, result.head, info, dtype=dtype)
    val_ap: dict[str, np.ndarray] = {} if val_set is None else {
        method: evaluate_head(result.head, val_set, config.objective, config.k, method)[0]
        for method in TABLE_METHODS}
    return TaggedTraining(result, info, len(train), len(train_set.features), cache_seconds, val_ap)
