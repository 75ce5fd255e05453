"""The ROI detector on VOC val, lever by lever: what each of detection labels, hard negatives, non-square proposals,
the ROI layout with the context box, the whole-image vector, iterated box regression and box voting adds, from the
frozen trunk and the 422 train images, through the library's own code
(:func:`midlevel_fast.recipes.detector_run.voc_detector_rows`, :func:`midlevel_fast.training.detector_fit.fit_detector`,
:func:`midlevel_fast.scoring.roi_detections.roi_detections`).

The train rows are made once, with every feature (mid-level vector, quadrant layout, context box 1.5×, whole-image
vector) on the "ratios" proposals (the dense squares and their 1:2 and 2:1 rectangles); a row of the table that
uses fewer features or the squares only trains on a column slice
(:func:`midlevel_fast.features.roi.roi_columns`) or a subset of them. Each row is then a detector of its own,
scored with its own proposals and features.

Every choice is made on train alone: a row is fitted twice, on three quarters of train (its mAP on the held-out
quarter is the table's first column, what the levers kept were chosen by) and on all of train (its val mAP). The
ridge of the regression (:data:`RIDGES`) and the softmax's epochs (:data:`EPOCHS`) are chosen together by the
held-out mAP of the last row. Detection AP by the devkit's rules
(:func:`midlevel_fast.metrics.detection_ap.detection_ap`) and, for the last row, by pycocotools configured as
close to VOC as it goes (:func:`experiments.detection_oracles.scored`).

Run: ``python -m experiments.roi_detector [--voc ROOT] [--cache DIR] [--images N]`` (the trunk maps are cached
under ``--cache``, about 8 GB for train + val; about 20 min on 2 cores with the maps there).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from experiments.detection_oracles import scored
from midlevel_fast.backbones import get_backbone
from midlevel_fast.cache.trunk_maps import TrunkMapsCache
from midlevel_fast.datasets.voc import VOC_CLASSES, VocImage, load_split, object_arrays
from midlevel_fast.features.proposals import ProposalConfig, dense_proposals
from midlevel_fast.features.roi import RoiConfig, roi_columns
from midlevel_fast.metrics.average_precision import format_ap_table
from midlevel_fast.metrics.detection_ap import GroundTruth, detection_ap
from midlevel_fast.model.detector import RoiDetector
from midlevel_fast.recipes.detector_run import DETECTOR_PROPOSALS, voc_detector_rows
from midlevel_fast.scoring.detections import Detection
from midlevel_fast.scoring.roi_detections import roi_detections
from midlevel_fast.training.detector_fit import DetectorRows, FitSettings, fit_detector
from tests.helpers import experiment_voc_root

SQUARES = ProposalConfig()
ALL = RoiConfig(layout=True, context=1.5, whole_image=True)
RIDGES = (0.1, 1.0, 10.0)
EPOCHS = (4, 8, 15)


@dataclass(frozen=True)
class Row:
    """One row of the lever table: the proposals (``squares`` only, or with the rectangles), the ROI features,
    the mining passes, the regression steps and box voting."""

    name: str
    squares: bool
    roi: RoiConfig
    passes: int = 2
    steps: int = 0
    voting: float | None = None


MID = RoiConfig()
MID_WHOLE = RoiConfig(whole_image=True)
ROWS = [
    Row("detection labels (squares, mid-level vector, random background)", True, MID, passes=0),
    Row("+ hard negatives (2 passes)", True, MID),
    Row("1:2/2:1 proposals (mid-level, random background)", False, MID, passes=0),
    Row("+ ROI layout + context box", False, RoiConfig(layout=True, context=1.5), passes=0),
    Row("mid-level + whole-image vector", False, MID_WHOLE, passes=0),
    Row("+ iterated box regression (2 steps)", False, MID_WHOLE, passes=0, steps=2),
    Row("+ box voting (the detector's default)", False, MID_WHOLE, passes=0, steps=2, voting=0.5),
]


def square_rows(rows: DetectorRows, img: VocImage, width: int, height: int, backbone) -> torch.Tensor:
    """Which of ``rows`` are dense squares or the image's own objects: the rows of the squares-only rows."""
    keys = {tuple(b) for b in dense_proposals(width, height, backbone, SQUARES).tolist()}
    keys |= {tuple(b) for b in object_arrays(img)[0].float().tolist()}
    return torch.tensor([tuple(b) in keys for b in rows.boxes.tolist()], dtype=torch.bool)


def narrowed(rows: Sequence[DetectorRows], masks: Sequence[torch.Tensor] | None,
             columns: torch.Tensor) -> list[DetectorRows]:
    """``rows`` cut to the feature ``columns`` and, with ``masks``, to the masked rows."""
    out = []
    for i, r in enumerate(rows):
        r = r.subset(masks[i]) if masks is not None else r
        out.append(r._replace(features=r.features[:, columns]))
    return out


def truth_of(img: VocImage) -> GroundTruth:
    return GroundTruth(np.array([o.box for o in img.objects]).reshape(-1, 4), [o.name for o in img.objects],
                       np.array([o.difficult for o in img.objects]))


def fitted(rows: Sequence[DetectorRows], squares: Sequence[torch.Tensor], row: Row, backbone, epochs: int,
           ridge: float) -> RoiDetector:
    """The detector of ``row`` fitted on ``rows`` (``squares``: their masks of the squares-only rows)."""
    det = fit_detector(narrowed(rows, squares if row.squares else None, roi_columns(backbone, row.roi, ALL)),
                       len(VOC_CLASSES), SQUARES if row.squares else DETECTOR_PROPOSALS, row.roi,
                       FitSettings(epochs=epochs, passes=row.passes, ridge=ridge, steps=2))
    return replace(det, steps=row.steps, voting_iou=row.voting)


def detected(detectors: Sequence[RoiDetector], images: Sequence[VocImage],
             maps: TrunkMapsCache) -> tuple[list[list[list[Detection]]], np.ndarray]:
    """Every detector's detections of every image, and each detector's seconds per image on the maps."""
    dets: list[list[list[Detection]]] = [[] for _ in detectors]
    seconds = np.zeros(len(detectors))
    for img in images:
        pyramid = maps.maps(img.image_id, img.path)
        for j, det in enumerate(detectors):
            t = time.perf_counter()
            dets[j].append(roi_detections(pyramid, det, VOC_CLASSES, threshold=0.0))
            seconds[j] += time.perf_counter() - t
    return dets, seconds / max(1, len(images))


def mean_ap(dets: Sequence[Sequence[Detection]], images: Sequence[VocImage], method: str = "voc2010") -> float:
    return detection_ap(dets, [truth_of(img) for img in images], VOC_CLASSES, method=method)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voc", default=None)
    ap.add_argument("--cache", default=None, help="trunk maps cache base (default $MIDLEVEL_FAST_CACHE)")
    ap.add_argument("--images", type=int, default=None, help="first N images of each split (default: all)")
    args = ap.parse_args()
    root = experiment_voc_root(args.voc)
    backbone = get_backbone("efficientnet_lite0")
    maps = TrunkMapsCache(backbone, "efficientnet_lite0", args.cache)
    train, val = (load_split(root, s)[: args.images] for s in ("train", "val"))
    t0 = time.perf_counter()
    rows = voc_detector_rows(train, maps, VOC_CLASSES, DETECTOR_PROPOSALS, ALL, progress=True)
    squares = [square_rows(r, img, img.width, img.height, backbone) for r, img in zip(rows, train)]
    t_rows = time.perf_counter() - t0
    print(json.dumps({"seconds_train_rows": round(t_rows, 1), "rows": sum(len(r.labels) for r in rows)}),
          flush=True)

    # The ridge and the epochs: the last row fitted on three quarters of train, its mAP on the held-out quarter.
    quarter = len(rows) // 4
    held_images = train[:quarter]
    grid = [(r, e) for r in RIDGES for e in EPOCHS]
    trials = [fitted(rows[quarter:], squares[quarter:], ROWS[-1], backbone, e, r) for r, e in grid]
    held_maps = [mean_ap(d, held_images) for d in detected(trials, held_images, maps)[0]]
    ridge, epochs = grid[int(np.argmax(held_maps))]
    print(json.dumps({"ridge, epochs": grid, "held_out_map": [round(100 * m, 2) for m in held_maps],
                      "chosen": [ridge, epochs]}), flush=True)

    held_out = [fitted(rows[quarter:], squares[quarter:], row, backbone, epochs, ridge) for row in ROWS]
    held_table = [mean_ap(d, held_images) for d in detected(held_out, held_images, maps)[0]]
    table = []
    for row in ROWS:
        t = time.perf_counter()
        table.append(fitted(rows, squares, row, backbone, epochs, ridge))
        print(json.dumps({"fitted": row.name, "seconds": round(time.perf_counter() - t, 1),
                          "negatives": table[-1].description["negatives"]}), flush=True)
    dets, seconds = detected(table, val, maps)
    truth = [truth_of(img) for img in val]
    results = [(detection_ap(d, truth, VOC_CLASSES), detection_ap(d, truth, VOC_CLASSES, method="voc2007"))
               for d in dets]
    print(format_ap_table(VOC_CLASSES, {r.name: res[0][0] for r, res in zip(ROWS, results)}))
    for row, h, ((_, area), (_, eleven)), s in zip(ROWS, held_table, results, seconds):
        print(json.dumps({"row": row.name, "held_out_quarter_map": round(100 * h, 2),
                          "map_voc2010": round(100 * area, 2), "map_voc2007": round(100 * eleven, 2),
                          "seconds_per_image_on_maps": round(s, 3)}))
    coco = scored(dets[-1], truth)
    print(json.dumps({"last row, other scorers": {name: round(100 * float(np.nanmean(ap)), 2)
                                                   for name, ap in coco.items()}}))
    print(json.dumps({"train_images": len(train), "val_images": len(val), "ridge": ridge, "epochs": epochs,
                      "seconds_total": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
