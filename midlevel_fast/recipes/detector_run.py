"""Training the ROI detector (:class:`midlevel_fast.model.detector.RoiDetector`) of a head on VOC-style splits
and writing the head with it: the recipe behind ``midlevel-fast voc detector``.

Per image of the splits: its trunk maps (from a :class:`~midlevel_fast.cache.trunk_maps.TrunkMapsCache`, computed
on a miss), the dense proposals (:data:`DETECTOR_PROPOSALS`), and the rows of
:func:`midlevel_fast.training.detector_fit.detector_rows` for the head's classes; then
:func:`~midlevel_fast.training.detector_fit.fit_detector`. The head's weights, calibration and the rest are
written unchanged.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Sequence

from midlevel_fast.backbones import get_backbone
from midlevel_fast.cache.trunk_maps import TrunkMapsCache
from midlevel_fast.datasets.voc import VocImage, load_split, object_arrays
from midlevel_fast.features.proposals import ProposalConfig, dense_proposals
from midlevel_fast.features.roi import RoiConfig
from midlevel_fast.model.head import HeadInfo, load_head, save_head, stored_dtype
from midlevel_fast.runtime.progress import progress_bar
from midlevel_fast.training.detector_fit import (DEFAULT_FIT, DetectorRows, FitSettings, detector_rows,
                                                 fit_detector)

logger = logging.getLogger(__name__)

# The proposals and ROI features the detector is trained on by default (docs/boxes.md, "The ROI detector").
DETECTOR_PROPOSALS = ProposalConfig(aspect_ratios=(2.0,))
DETECTOR_ROI = RoiConfig(layout=True, context=1.5)


def voc_detector_rows(images: Sequence[VocImage], maps: TrunkMapsCache, class_names: Sequence[str],
                      proposals: ProposalConfig, roi: RoiConfig, progress: bool | None = None) -> list[DetectorRows]:
    """The training rows of every image of ``images`` (:func:`detector_rows`), its maps from ``maps``."""
    rows = []
    for i, img in enumerate(progress_bar(logger, progress, iterable=images, desc="detector rows", unit="img")):
        pyramid = maps.maps(img.image_id, img.path)
        boxes, labels, difficult = object_arrays(img, class_names)
        props = dense_proposals(pyramid.plan.width, pyramid.plan.height, maps.backbone, proposals)
        rows.append(detector_rows(pyramid, props, boxes, labels, difficult, roi, seed=i))
    return rows


def train_voc_detector(head_file: str | os.PathLike, voc_root: str | os.PathLike, splits: Sequence[str],
                       out: str | os.PathLike, *, maps_base: str | os.PathLike | None = None,
                       settings: FitSettings = DEFAULT_FIT, proposals: ProposalConfig = DETECTOR_PROPOSALS,
                       roi: RoiConfig = DETECTOR_ROI, progress: bool | None = None) -> HeadInfo:
    """Trains the detector of the head in ``head_file`` on the objects of ``splits`` of ``voc_root`` and writes
    the head with it to ``out`` (module docstring); the maps are cached under ``maps_base``. Raises ``ValueError``
    when the splits hold no object of the head's classes, or for a head that fine-tuned its backbone's top."""
    head, info = load_head(head_file)
    info.require_frozen("training the ROI detector")
    started = time.perf_counter()
    maps = TrunkMapsCache(get_backbone(info.backbone), info.backbone, maps_base, scales=info.scales,
                          grid_step=info.grid_step)
    # Objects of classes the head does not report are dropped (load_split warns): they are no positives.
    images = [im for split in splits for im in load_split(voc_root, split, info.class_names, unknown="skip")]
    rows = voc_detector_rows(images, maps, info.class_names, proposals, roi, progress)
    if not any((r.labels > 0).any() for r in rows):
        raise ValueError(f"splits {list(splits)} of {voc_root} hold no object of the head's classes: "
                         "no detector to train")
    info.detector = fit_detector(rows, len(info.class_names), proposals, roi, settings,
                                 {"splits": list(splits), "images": len(images)})
    info.detector.description["seconds"] = round(time.perf_counter() - started, 1)
    save_head(out, head, info, dtype=stored_dtype(head_file))
    return info
