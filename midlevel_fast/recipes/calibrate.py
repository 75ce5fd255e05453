"""Fitting a head's presence calibration on power-mean scores it did not see, from the feature cache, as
``midlevel-fast calibrate`` does it:

* held out (:func:`held_out_scores`): the head scores the images of a split it was not trained on (a head trained
  on ``train``, fitted on ``val``);
* cross-fit (:func:`cross_fit_scores`): the head's own training images are split into ``folds`` seeded folds
  (:func:`cross_fit_folds`); for each, a head is trained on the other folds with the head's ``TrainConfig`` and
  feature modes, and scores the held-out fold; the calibration is fitted on all the out-of-fold scores and stored
  in the head trained on every image. The fold heads train without a validation set, for the number of epochs the
  head's kept weights had (``extra["best_epoch"] + 1``), so that no image outside the training splits is used.

Scores are the head's: power mean (exponent ``k`` of the head) of its patch probabilities on the features of its
first training mode (the mode it is meant to score with), as :func:`midlevel_fast.training.evaluate.image_scores`.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from midlevel_fast.backbones import get_backbone
from midlevel_fast.model.head import AdaptationHead, HeadInfo, load_head, save_head, stored_dtype
from midlevel_fast.model.presence import Calibration
from midlevel_fast.cache.feature_cache import FeatureCache
from midlevel_fast.training.calibration_fit import fit_calibration
from midlevel_fast.training.consistency import PAIR_MODES, consistency_pairs
from midlevel_fast.training.evaluate import image_scores, patch_probabilities
from midlevel_fast.training.patches import eval_set, merge_patch_sets, patch_set
from midlevel_fast.training.train import TrainConfig, train_head
from midlevel_fast.datasets.voc import VocImage, load_split, read_split
from midlevel_fast.recipes.voc_run import voc_cache

Log = Callable[[str], None]
# The training settings --cross-fit needs in the head file (written by midlevel_fast.recipes.voc_run).
TRAINING_METADATA: tuple[str, ...] = ("splits", "mode", "train")


@dataclass
class FitData:
    """(score, label) pairs to fit a calibration on: ``scores (N, C)`` float64 power-mean scores, ``positives``
    and ``ignore`` ``(N, C)`` bool VOC labels, the ``image_ids`` of the ``N`` images and a ``description`` of how
    the scores were made (stored with the calibration)."""

    scores: torch.Tensor
    positives: torch.Tensor
    ignore: torch.Tensor
    image_ids: list[str]
    description: dict[str, Any] = field(default_factory=dict)


def head_modes(info: HeadInfo) -> list[str]:
    """The feature modes the head was trained on (``extra["mode"]``, a name or a list), ``["dense"]`` if unknown."""
    mode = info.extra.get("mode", "dense")
    return [mode] if isinstance(mode, str) else list(mode)


def cached_images(voc_root: str | os.PathLike, split: str, caches: Sequence[FeatureCache]) -> list[VocImage]:
    """The images of ``split``, after checking that every cache of ``caches`` holds all of them (``ValueError``
    naming the cache, the split and the command that builds it, instead of computing features here)."""
    images = load_split(voc_root, split)
    for cache in caches:
        missing = [im.image_id for im in images if im.image_id not in cache]
        if missing:
            raise ValueError(f"feature cache {cache.root} ({cache.config.mode}) lacks {len(missing)} of the "
                             f"{len(images)} images of split {split!r} (e.g. {missing[0]}); build it with "
                             f"`midlevel-fast cache --voc {voc_root} --split {split} --mode {cache.config.mode}`")
    return images


def scores_of(head: torch.nn.Module, info: HeadInfo, cache: FeatureCache, images: Sequence[VocImage]) -> FitData:
    """``head``'s power-mean scores of ``images`` from ``cache``, with their labels (``head`` is put in eval mode)."""
    info.require_frozen("calibration from the feature cache")
    data = eval_set(cache, images, info.class_names)
    head.eval()
    probs = patch_probabilities(head, data.features, info.extra.get("objective", "softmax"), len(info.class_names))
    scores = image_scores(probs, data.image_index, len(images), info.k)
    return FitData(scores, torch.from_numpy(data.positives), torch.from_numpy(data.ignore),
                   [im.image_id for im in images])


def held_out_scores(head: torch.nn.Module, info: HeadInfo, voc_root: str | os.PathLike, split: str,
                    cache_base: str | os.PathLike | None = None, unseen_only: bool = False) -> FitData:
    """The head's scores of the images of ``split``, none of which the head may have been trained on: a split
    that is one of its training splits is refused, and so is one that shares images with them (checked by image
    id against the training splits' lists in ``voc_root``), unless ``unseen_only``, which leaves those out."""
    trained_on = info.extra.get("splits", [])
    if split in trained_on:
        raise ValueError(f"the head was trained on split {split!r} (its splits: {trained_on}): fit the calibration "
                         "on a split it did not see, or use --cross-fit")
    seen = {i for s in trained_on for i in read_split(voc_root, s)}
    ids = read_split(voc_root, split)
    overlap = [i for i in ids if i in seen]
    if overlap and not unseen_only:
        raise ValueError(f"{len(overlap)} of the {len(ids)} images of split {split!r} are in the head's training "
                         f"splits {trained_on} (e.g. {overlap[0]}): pass --unseen-only to fit on the other "
                         f"{len(ids) - len(overlap)}, or use --cross-fit")
    if len(overlap) == len(ids):
        raise ValueError(f"every image of split {split!r} is in the head's training splits {trained_on}: nothing "
                         "unseen to fit on; use --cross-fit")
    mode = head_modes(info)[0]
    cache = voc_cache(get_backbone(info.backbone), mode, cache_base, info.scales, info.grid_step,
                      info.extra.get("window_step"))
    images = [im for im in cached_images(voc_root, split, [cache]) if im.image_id not in seen]
    data = scores_of(head, info, cache, images)
    data.description = {"source": "held-out", "splits": [split], "mode": mode, "folds": None,
                        "left_out_as_seen": len(overlap)}
    return data


def _check_folds(folds: int, n: int | None) -> None:
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if n is not None and folds > n:
        raise ValueError(f"folds ({folds}) cannot exceed the number of images ({n})")


def cross_fit_folds(n: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """``folds`` disjoint sorted index arrays covering ``range(n)``, of sizes differing by at most one, from a
    permutation seeded by ``seed``."""
    _check_folds(folds, n)
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


def training_metadata(info: HeadInfo) -> tuple[list[str], list[str], TrainConfig]:
    """``(splits, modes, config)`` the head was trained with, the config cut to the epochs its weights had;
    ``ValueError`` when the head file lacks them."""
    missing = [key for key in TRAINING_METADATA if key not in info.extra]
    if missing:
        raise ValueError(f"the head has no training metadata ({', '.join(missing)} missing from its extra): "
                         "--cross-fit retrains it on its own splits and needs a head written by `midlevel-fast "
                         "train`; fit on a held-out split with --split instead")
    try:
        config = TrainConfig(**info.extra["train"])
    except TypeError as e:
        raise ValueError(f"the head's training settings are not a TrainConfig ({e})") from None
    if "best_epoch" in info.extra:
        config = dataclasses.replace(config, max_epochs=int(info.extra["best_epoch"]) + 1)
    return list(info.extra["splits"]), head_modes(info), config


def cross_fit_scores(caches: Sequence[FeatureCache], images: Sequence[VocImage], info: HeadInfo, config: TrainConfig,
                     folds: int = 5, seed: int = 0, log: Log | None = print) -> FitData:
    """Out-of-fold scores of ``images``: for each fold of :func:`cross_fit_folds`, a head trained with ``config``
    on the patches of the other folds (pooled over ``caches``, one per mode; consistency pairs when ``config``
    asks for them) scores the fold from ``caches[0]``. ``log`` gets one line per fold."""
    parts = cross_fit_folds(len(images), folds, seed)
    classes = info.class_names
    n = len(images)
    scores = torch.zeros(n, len(classes), dtype=torch.float64)
    positives = torch.zeros(n, len(classes), dtype=torch.bool)
    ignore = torch.zeros_like(positives)
    modes = [cache.config.mode for cache in caches]
    for f, held in enumerate(parts):
        t0 = time.perf_counter()
        held_set = set(held.tolist())
        train_images = [im for i, im in enumerate(images) if i not in held_set]
        rows = merge_patch_sets([patch_set(cache, train_images, classes, config.bg_fraction, config.seed,
                                           config.objective) for cache in caches])
        pairs = None
        if config.consistency:
            windows, crops = (caches[modes.index(mode)] for mode in PAIR_MODES)
            pairs = consistency_pairs(windows, crops, [im.image_id for im in train_images])
        result = train_head(rows, len(classes), config, None, log=None, pairs=pairs)
        fold = scores_of(result.head, info, caches[0], [images[i] for i in held])
        scores[held], positives[held], ignore[held] = fold.scores, fold.positives, fold.ignore
        if log:
            log(f"fold {f + 1}/{folds}: head trained on {len(train_images)} images ({len(rows.features)} patches, "
                f"{len(result.history)} epochs), scored {len(held)} held-out images ({time.perf_counter() - t0:.0f} s)")
    return FitData(scores, positives, ignore, [im.image_id for im in images],
                   {"source": "cross-fit", "mode": modes if len(modes) > 1 else modes[0], "folds": folds,
                    "seed": seed, "epochs": config.max_epochs})


def cross_fit_head_scores(info: HeadInfo, voc_root: str | os.PathLike, folds: int = 5, seed: int = 0,
                          cache_base: str | os.PathLike | None = None, log: Log | None = print) -> FitData:
    """:func:`cross_fit_scores` over the head's own training splits and modes, read from its metadata
    (:func:`training_metadata`), from the caches under ``cache_base``."""
    splits, modes, config = training_metadata(info)
    _check_folds(folds, None)  # before any work; the image count is checked once the splits are read
    backbone = get_backbone(info.backbone)
    caches = [voc_cache(backbone, mode, cache_base, info.scales, info.grid_step, info.extra.get("window_step"))
              for mode in modes]
    images = [im for split in splits for im in cached_images(voc_root, split, caches)]
    data = cross_fit_scores(caches, images, info, config, folds, seed, log)
    data.description["splits"] = splits
    return data


def fallback_messages(calibration: Calibration, class_names: Sequence[str]) -> list[str]:
    """One line per class fitted by the prior rule (no positive or no negative in the fit data), saying which."""
    kept = ~calibration.ignore
    lines = []
    for c, name in enumerate(class_names):
        if name in calibration.description.get("fallback", []):
            n, n_pos = int(kept[:, c].sum()), int((calibration.positives & kept)[:, c].sum())
            which = "no positive" if n_pos == 0 else "no negative"
            lines.append(f"class {name!r} has {which} in the fit data ({n} images): its presence is the prior "
                         f"({n_pos} + 1)/({n} + 2) = {(n_pos + 1) / (n + 2):.4f} whatever its score")
    return lines


def calibrate_head(head_path: str | os.PathLike, out: str | os.PathLike, data: FitData, method: str,
                   head: AdaptationHead | None = None, info: HeadInfo | None = None) -> Calibration:
    """Fits a ``method`` calibration on ``data`` and writes the head of ``head_path`` with it to ``out`` (weights
    in the dtype they had); ``head``/``info``: the head file's contents when already loaded."""
    if head is None or info is None:
        head, info = load_head(head_path)
    calibration = fit_calibration(data.scores, data.positives, data.ignore, method, info.k, info.class_names,
                                  {**data.description, "image_ids": data.image_ids})
    save_head(out, head, dataclasses.replace(info, calibration=calibration), dtype=stored_dtype(head_path))
    return calibration
