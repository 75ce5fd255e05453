"""The ROI detector on VOC val, lever by lever: what each of detection labels, hard negatives, non-square proposals,
the ROI layout with the context box, iterated box regression and box voting adds, from the frozen trunk and the 422
train images, through the library's own code (:func:`midlevel_fast.recipes.detector_run.voc_detector_rows`,
:func:`midlevel_fast.training.detector_fit.fit_detector`,
:func:`midlevel_fast.scoring.roi_detections.roi_detections`).

The train rows are made once, with the widest features (mid-level vector, quadrant layout, context box 1.5×) on
the "ratios" proposals (the dense squares and their 1:2 and 2:1 rectangles); a row of the table that uses fewer
features or the squares only trains on a column slice or a subset of them (the feature layout of
:func:`midlevel_fast.features.roi.box_features` puts the mid-level vector first, then the layout, then the
context). Each row is then a detector of its own, scored on every val image with its own proposals and features.
The softmax's weight decay is :data:`WEIGHT_DECAY` (chosen on a held-out quarter of train in an earlier run, where
1e-3, 1e-2 and 0.1 differed by under a point; docs/boxes.md); the ridge of the regression is chosen here by its
squared error on a held-out quarter of train. Detection AP by the devkit's rules
(:func:`midlevel_fast.metrics.detection_ap.detection_ap`) and, for the last row, by pycocotools configured as
close to VOC as it goes (:func:`experiments.detection_oracles.scored`).

Run: ``python -m experiments.roi_detector [--voc ROOT] [--cache DIR] [--images N]`` (the trunk maps are cached
under ``--cache``, about 8 GB for train + val; about 30 min on 2 cores with the maps there). The layout without
the context, and one regression step without the second, are left out of the table to keep it under that.
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
from midlevel_fast.features.roi import RoiConfig, roi_feature_dim
from midlevel_fast.metrics.average_precision import format_ap_table
from midlevel_fast.metrics.detection_ap import GroundTruth, detection_ap
from midlevel_fast.model.detector import RoiDetector
from midlevel_fast.recipes.detector_run import DETECTOR_PROPOSALS, voc_detector_rows
from midlevel_fast.scoring.detections import Detection
from midlevel_fast.scoring.roi_detections import roi_detections
from midlevel_fast.training.box_regression_fit import fit_box_regression
from midlevel_fast.training.detector_fit import DetectorRows, FitSettings, fit_detector, regression_rows
from tests.helpers import experiment_voc_root

SQUARES = ProposalConfig()
WIDEST = RoiConfig(layout=True, context=1.5)
WEIGHT_DECAY = 0.1
RIDGES = (1.0, 10.0, 100.0)


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
ROWS = [
    Row("detection labels (squares, mid-level)", True, MID, passes=0),
    Row("+ hard negatives", True, MID),
    Row("+ 1:2/2:1 proposals", False, MID),
    Row("+ ROI layout + context", False, WIDEST),
    Row("+ iterated box regression (2 steps)", False, WIDEST, steps=2),
    Row("+ box voting", False, WIDEST, steps=2, voting=0.5),
]


def square_rows(rows: DetectorRows, img: VocImage, width: int, height: int, backbone) -> torch.Tensor:
    """Which of ``rows`` are dense squares or the image's own objects: the rows of the squares-only rows."""
    keys = {tuple(b) for b in dense_proposals(width, height, backbone, SQUARES).tolist()}
    keys |= {tuple(b) for b in object_arrays(img)[0].float().tolist()}
    return torch.tensor([tuple(b) in keys for b in rows.boxes.tolist()], dtype=torch.bool)


def narrowed(rows: Sequence[DetectorRows], masks: Sequence[torch.Tensor] | None, dim: int) -> list[DetectorRows]:
    """``rows`` cut to the first ``dim`` feature columns and, with ``masks``, to the masked rows."""
    out = []
    for i, r in enumerate(rows):
        r = r.subset(masks[i]) if masks is not None else r
        out.append(r._replace(features=r.features[:, :dim]))
    return out


def truth_of(img: VocImage) -> GroundTruth:
    return GroundTruth(np.array([o.box for o in img.objects]).reshape(-1, 4), [o.name for o in img.objects],
                       np.array([o.difficult for o in img.objects]))


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
    rows = voc_detector_rows(train, maps, VOC_CLASSES, DETECTOR_PROPOSALS, WIDEST, progress=True)
    squares = [square_rows(r, img, img.width, img.height, backbone) for r, img in zip(rows, train)]
    t_rows = time.perf_counter() - t0
    print(json.dumps({"seconds_train_rows": round(t_rows, 1), "rows": sum(len(r.labels) for r in rows)}),
          flush=True)

    # The ridge: fitted on three quarters of train, its squared error on the held-out quarter's object rows.
    quarter = len(rows) // 4
    fit_part, held = regression_rows(rows[quarter:]), regression_rows(rows[:quarter])
    errors = []
    for ridge in RIDGES:
        reg = fit_box_regression(fit_part, len(VOC_CLASSES), ridge, features="roi")
        errors.append(float(((reg.deltas(held.features.float(), held.labels).double() - held.targets) ** 2).mean()))
    ridge = RIDGES[int(np.argmin(errors))]
    print(json.dumps({"ridges": RIDGES, "held_out_mse": [round(e, 5) for e in errors], "ridge": ridge}), flush=True)

    detectors: dict[tuple, RoiDetector] = {}
    table = []
    for row in ROWS:
        # The softmax does not depend on the steps: one fit per proposals, features and mining, its regression
        # fitted always and used by the rows with steps.
        key = (row.squares, row.roi, row.passes)
        if key not in detectors:
            t = time.perf_counter()
            dim = roi_feature_dim(backbone, row.roi)
            detectors[key] = fit_detector(
                narrowed(rows, squares if row.squares else None, dim), len(VOC_CLASSES),
                SQUARES if row.squares else DETECTOR_PROPOSALS, row.roi,
                FitSettings(weight_decay=WEIGHT_DECAY, passes=row.passes, ridge=ridge, steps=2))
            print(json.dumps({"fitted": row.name, "seconds": round(time.perf_counter() - t, 1),
                              "negatives": detectors[key].description["negatives"]}), flush=True)
        det = detectors[key]
        table.append(replace(det, steps=row.steps, voting_iou=row.voting))

    dets: list[list[list[Detection]]] = [[] for _ in table]
    seconds = np.zeros(len(table))
    for img in val:
        pyramid = maps.maps(img.image_id, img.path)
        for j, det in enumerate(table):
            t = time.perf_counter()
            dets[j].append(roi_detections(pyramid, det, VOC_CLASSES, threshold=0.0))
            seconds[j] += time.perf_counter() - t
    truth = [truth_of(img) for img in val]
    results = [(detection_ap(d, truth, VOC_CLASSES), detection_ap(d, truth, VOC_CLASSES, method="voc2007"))
               for d in dets]
    print(format_ap_table(VOC_CLASSES, {r.name: res[0][0] for r, res in zip(ROWS, results)}))
    for row, ((_, area), (_, eleven)), s in zip(ROWS, results, seconds):
        print(json.dumps({"row": row.name, "map_voc2010": round(100 * area, 2), "map_voc2007": round(100 * eleven, 2),
                          "seconds_per_image_on_maps": round(s / len(val), 3)}))
    coco = scored(dets[-1], truth)
    print(json.dumps({"last row, other scorers": {name: round(100 * float(np.nanmean(ap)), 2)
                                                   for name, ap in coco.items()}}))
    print(json.dumps({"train_images": len(train), "val_images": len(val), "ridge": ridge,
                      "weight_decay": WEIGHT_DECAY, "seconds_total": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
