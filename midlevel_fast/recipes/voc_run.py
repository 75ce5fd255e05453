"""The procedure on a VOC-style data set, as ``midlevel-fast cache``, ``train`` and ``eval`` run it: cache the
frozen patch features of splits, train a head on them and write its file, measure a head's AP.

Caches live under ``cache_base`` (default :func:`midlevel_fast.cache.build.default_cache_root`), one
directory per :class:`midlevel_fast.cache.feature_cache.CacheConfig`, on the paper's grid unless the head says
otherwise; missing images are computed first (resumable, sharded under ``torchrun``). Several feature modes (see
:data:`midlevel_fast.cache.feature_cache.CACHE_MODES`) pool their patches into one training set; validation uses the
first mode's features, the mode the head is meant to score with.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from midlevel_fast.backbones.layout import BackboneLike
from midlevel_fast.backbones import Backbone, get_backbone, resolve_backbone
from midlevel_fast.backbones.layout import WindowLayout
from midlevel_fast.model.head import HeadInfo, load_head, save_head, stored_dtype
from midlevel_fast.model.classifier import PatchClassifier
from midlevel_fast.features.grid import PAPER_SCALES, PAPER_STEP
from midlevel_fast.cache.feature_cache import CacheConfig, FeatureCache
from midlevel_fast.model.box_regression import WINDOW_FEATURES
from midlevel_fast.training.box_regression_fit import DEFAULT_RIDGE, fit_box_regression, regression_rows
from midlevel_fast.cache.build import default_cache_root, fill_cache, open_cache
from midlevel_fast.training.consistency import PAIR_MODES, consistency_pairs
from midlevel_fast.metrics.average_precision import METHODS, Method
from midlevel_fast.training.evaluate import evaluate_head
from midlevel_fast.training.patches import eval_set, merge_patch_sets, patch_set
from midlevel_fast.training.train import TrainConfig, TrainResult, train_head
from midlevel_fast.datasets.voc import VOC_CLASSES, VocImage, load_split

Log = Callable[[str], None]
# The AP tables report both methods, the older first.
TABLE_METHODS: tuple[Method, ...] = tuple(sorted(METHODS))


def voc_cache(backbone: BackboneLike, mode: str, cache_base: str | os.PathLike | None = None,
              scales: Sequence[float] = PAPER_SCALES, grid_step: float = PAPER_STEP,
              window_step: int | None = None) -> FeatureCache:
    """The cache of ``backbone``'s ``mode`` features on that grid under ``cache_base`` (opened, not filled)."""
    config = CacheConfig(backbone=backbone.name, mode=mode, scales=list(scales), grid_step=grid_step,
                         window_step=window_step, feature_dim=backbone.feature_dim)
    return open_cache(default_cache_root() if cache_base is None else cache_base, config)


def cached_split(voc_root: str | os.PathLike, split: str, backbone: BackboneLike,
                 caches: Sequence[FeatureCache]) -> list[VocImage]:
    """Reads ``split`` once and fills each of ``caches`` with its images."""
    images = load_split(voc_root, split)
    for cache in caches:
        fill_cache(cache, backbone, [(im.image_id, im.path) for im in images])
    return images


def cache_voc_splits(voc_root: str | os.PathLike, splits: Sequence[str],
                     backbone: str | Backbone = "efficientnet_lite0", modes: Sequence[str] = ("dense",),
                     cache_base: str | os.PathLike | None = None,
                     window_step: int | None = None) -> list[FeatureCache]:
    """Caches the features of every image of ``splits`` in each of ``modes`` and verifies the caches; returns
    them, one per mode. ``backbone``: a name or a built backbone (:func:`midlevel_fast.backbones.resolve_backbone`)."""
    bb = resolve_backbone(backbone)
    caches = [voc_cache(bb, mode, cache_base, window_step=window_step) for mode in modes]
    for split in splits:
        cached_split(voc_root, split, bb, caches)
    for cache in caches:
        cache.verify()
    return caches


@dataclass
class VocTraining:
    """What :func:`train_voc_head` did: the training ``result`` and the ``info`` written with the head; the
    number of training ``images``, ``rows`` (``background`` of them) and consistency ``pairs``; per-class AP of
    the final head on the validation split per method of :data:`TABLE_METHODS` (empty without one)."""

    result: TrainResult
    info: HeadInfo
    images: int
    rows: int
    background: int
    pairs: int
    val_ap: dict[str, np.ndarray]


def train_voc_head(voc_root: str | os.PathLike, out: str | os.PathLike, splits: Sequence[str] = ("train",),
                   val_split: str | None = "val", backbone: str | Backbone = "efficientnet_lite0",
                   modes: Sequence[str] = ("dense",), config: TrainConfig = TrainConfig(),
                   cache_base: str | os.PathLike | None = None, window_step: int | None = None,
                   dtype: torch.dtype = torch.float32, log: Log | None = print) -> VocTraining:
    """Trains a head on the cached patches of ``splits`` (pooled over ``modes``) with per-epoch validation on
    ``val_split`` (none when empty or ``None``), and writes it to ``out`` (weights as ``dtype``).

    The head file also gets the box regression of detections
    (:func:`midlevel_fast.training.box_regression_fit.fit_box_regression`), fitted on the first mode's positive
    patches of ``splits``. ``config.consistency > 0`` needs both
    :data:`midlevel_fast.training.consistency.PAIR_MODES` (``"dense"`` and ``"batched"``): the pairs are their windows
    and crops. ``log`` gets a line on the training set, then :func:`midlevel_fast.training.train.train_head`'s.
    """
    if config.consistency and not set(PAIR_MODES) <= set(modes):
        raise ValueError("the consistency term pairs dense windows with grid crops: it needs the modes "
                         f"{' and '.join(map(repr, PAIR_MODES))}, got {list(modes)}")
    bb = resolve_backbone(backbone)
    caches = [voc_cache(bb, mode, cache_base, window_step=window_step) for mode in modes]
    train_images = [im for split in splits for im in cached_split(voc_root, split, bb, caches)]
    val_images = cached_split(voc_root, val_split, bb, caches[:1]) if val_split else None
    t0 = time.perf_counter()
    train = merge_patch_sets([patch_set(cache, train_images, VOC_CLASSES, config.bg_fraction, config.seed,
                                        config.objective) for cache in caches])
    val = eval_set(caches[0], val_images, VOC_CLASSES) if val_images else None
    pairs = None
    if config.consistency:
        windows, crops = (caches[list(modes).index(mode)] for mode in PAIR_MODES)
        pairs = consistency_pairs(windows, crops, [im.image_id for im in train_images])
    if log:
        log(f"{len(train.features)} training patches from {len(train_images)} images "
            f"({int(train.counts[-1])} background kept)"
            + (f", {len(pairs)} dense/crop pairs" if pairs else "")
            + f", loaded in {time.perf_counter() - t0:.1f} s")
    result = train_head(train, len(VOC_CLASSES), config, val, log=log, pairs=pairs)
    # The detections start from the first mode's windows: their box regression is fitted on its patches.
    regression = fit_box_regression(regression_rows(caches[0], train_images, VOC_CLASSES), len(VOC_CLASSES))
    regression.description.update(splits=list(splits), mode=modes[0])
    info = HeadInfo(backbone=bb.name, class_names=list(VOC_CLASSES), k=config.k, scales=list(PAPER_SCALES),
                    grid_step=PAPER_STEP, layers=config.layers, hidden=config.hidden,
                    extra={"train": asdict(config), "mode": list(modes) if len(modes) > 1 else modes[0],
                           "window_step": window_step, "splits": list(splits),
                           "best_epoch": result.best_epoch, "val_map": result.best_map,
                           "objective": config.objective},
                    box_regression=regression)
    save_head(out, result.head, info, dtype=dtype)
    val_ap: dict[str, np.ndarray] = {} if val is None else {
        method: evaluate_head(result.head, val, config.objective, config.k, method)[0] for method in TABLE_METHODS}
    return VocTraining(result, info, len(train_images), len(train.features), int(train.counts[-1]),
                       len(pairs) if pairs else 0, val_ap)


@dataclass
class VocEvaluation:
    """What :func:`evaluate_voc_head` measured: the number of ``images`` and ``patches``, and per-class AP per
    ``(k, method)`` in the order asked for."""

    images: int
    patches: int
    ap: dict[tuple[float, str], np.ndarray]


def evaluate_voc_head(model: PatchClassifier, voc_root: str | os.PathLike, split: str = "val", mode: str = "dense",
                      ks: Sequence[float] | None = None, cache_base: str | os.PathLike | None = None,
                      window_step: int | None = None) -> VocEvaluation:
    """AP of ``model``'s head on ``split`` from cached ``mode`` features (computed when missing) on the head's grid,
    for each power-mean exponent of ``ks`` (default: the head's) and each method of :data:`TABLE_METHODS`."""
    model.info.require_frozen("evaluation from the feature cache")
    objective = model.info.extra.get("objective", "softmax")
    cache = voc_cache(model.backbone, mode, cache_base, model.info.scales, model.info.grid_step, window_step)
    images = cached_split(voc_root, split, model.backbone, [cache])
    data = eval_set(cache, images, model.class_names)
    ap: dict[tuple[float, str], np.ndarray] = {(k, method): evaluate_head(model.head, data, objective, k, method)[0]
          for k in (ks or [model.info.k]) for method in TABLE_METHODS}
    return VocEvaluation(len(images), len(data.features), ap)



def fit_voc_boxes(head_file: str | os.PathLike, voc_root: str | os.PathLike, splits: Sequence[str],
                  out: str | os.PathLike, ridge: float = DEFAULT_RIDGE, cache_base: str | os.PathLike | None = None,
                  window_step: int | None = None, features: str = "layout") -> HeadInfo:
    """Fits the box regression of the head in ``head_file`` on the dense windows of ``splits`` and writes the head
    with it to ``out`` (weights, calibration and the rest unchanged). ``features``: ``"layout"`` (the windows'
    mid-level vectors and quadrant means, :class:`midlevel_fast.backbones.layout.WindowLayout`; a cache of their
    own, computed when missing) or ``"mid-level"`` (the dense cache's vectors, what ``train`` fits). Raises
    ``ValueError`` when the splits hold no positive patch of the head's classes."""
    if features not in WINDOW_FEATURES:
        raise ValueError(f"features must be one of {WINDOW_FEATURES}, got {features!r}")
    head, info = load_head(head_file)
    info.require_frozen("fitting the box regression")
    backbone = get_backbone(info.backbone)
    bb: BackboneLike = WindowLayout(backbone) if features == "layout" else backbone
    cache = voc_cache(bb, "dense", cache_base, info.scales, info.grid_step, window_step)
    images = [im for split in splits for im in cached_split(voc_root, split, bb, [cache])]
    rows = regression_rows(cache, images, info.class_names)
    if not len(rows.labels):
        raise ValueError(f"splits {list(splits)} of {voc_root} hold no object of the head's classes: no box to fit")
    info.box_regression = fit_box_regression(rows, len(info.class_names), ridge, features)
    info.box_regression.description.update(splits=list(splits), mode="dense", images=len(images))
    save_head(out, head, info, dtype=stored_dtype(head_file))
    return info
