"""VOC detection AP@0.5 on val (devkit rules: :mod:`midlevel_fast.metrics.detection_ap`) in one table: the
detections of ``ScoreResult.detections`` with and without the box regression, and boxes from the output maps.

    python -m experiments.detection [--voc ROOT] [--cache DIR] [--head FILE] [--layout] [--out results.json]

Needs the dense feature caches of train and val (computed when missing: ``midlevel-fast cache --voc ROOT --split
train val``). The head is the paper head trained on train (best val epoch; ``--head`` to give one); the box
regression is fitted on train's positive patches (:mod:`midlevel_fast.training.box_regression_fit`). Rows, all on
the cached dense windows of val, exactly the steps :func:`midlevel_fast.scoring.detections.detect` takes in
``score_image``:

* regressed windows: the windows with class probability >= 0.05, moved by the box regression, NMS 0.5;
* raw windows: the same without the regression;
* output-map components: per class whose best window passes 0.05, the paper's output map (mean of the covering
  windows) thresholded at half its maximum, one box per 8-connected component (its bounding box), scored by the
  map's maximum inside it.

``--layout`` adds the regression on the windows' *layout* (:class:`midlevel_fast.backbones.layout.WindowLayout`:
the mid-level vector, then the means of the window's four quadrants of trunk cells, 4×4 of Lite0's 7×7, 1280 + 4 ×
1280 features; ``midlevel-fast fit-boxes``' default), fitted the same way. It runs the trunk again on train and val
into the layout cache (6.7 GB under the cache directory, about 15 minutes on 2 cores, reused by ``fit-boxes``).

Diagnostics printed with the table: how many val objects any window (or any regressed window) covers at IoU >= 0.5,
whatever its score (the ceiling the windows set on recall), and the mean IoU of val's positive patches with their
objects before and after the regression, for a sweep of the ridge.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from midlevel_fast import output_maps
from midlevel_fast.backbones import get_backbone
from midlevel_fast.backbones.layout import WindowLayout
from midlevel_fast.model.head import load_head
from midlevel_fast.io.files import atomic_write_bytes
from midlevel_fast.scoring.detections import Detection, decode_boxes, detect, pairwise_iou
from midlevel_fast.training.box_regression_fit import DEFAULT_RIDGE, fit_box_regression, regression_rows
from midlevel_fast.metrics.detection_ap import GroundTruth, detection_ap
from midlevel_fast.metrics.average_precision import format_ap_table
from midlevel_fast.training.evaluate import patch_probabilities
from midlevel_fast.datasets.voc import VOC_CLASSES, VocImage, object_arrays
from midlevel_fast.recipes.voc_run import cached_split, train_voc_head, voc_cache
from tests.helpers import experiment_voc_root

RIDGES = (0.1, 0.3, 1.0, 3.0, 10.0)
MAP_FRACTION = 0.5


def layout_detections(backbone, train, val, windows, probs, sizes, root, cache_base) -> list[list[Detection]]:
    """The regressed-windows rule with the regression on the windows' layout (module docstring)."""
    layout = WindowLayout(backbone)
    lcache = voc_cache(layout, "dense", cache_base)
    for split in ("train", "val"):
        cached_split(root, split, layout, [lcache])
    for img, w in zip(val, windows):
        if not np.array_equal(lcache.load(img.image_id).boxes, w.numpy()):
            raise SystemExit(f"{img.image_id}: the layout cache's windows differ from the dense cache's")
    regression = fit_box_regression(regression_rows(lcache, train, VOC_CLASSES), len(VOC_CLASSES), DEFAULT_RIDGE,
                                    "layout")
    out = []
    for img, w, p, s in zip(val, windows, probs, sizes):
        f = torch.from_numpy(np.array(lcache.load(img.image_id).features)).float()
        out.append(detect(w, p, VOC_CLASSES, s, f, regression))
    return out


def ground_truth(images: list[VocImage]) -> list[GroundTruth]:
    """The objects of each image as :class:`GroundTruth`."""
    out = []
    for img in images:
        boxes, cls, difficult = object_arrays(img)
        out.append(GroundTruth(boxes.numpy(), [VOC_CLASSES[i] for i in cls.tolist()], difficult.numpy()))
    return out


def map_components(windows: torch.Tensor, probs: torch.Tensor, size: tuple[int, int],
                   threshold: float = 0.05) -> list[Detection]:
    """The output-map baseline of the module docstring for one image."""
    h, w = size
    classes = [c for c in range(probs.shape[1]) if probs[:, c].max() >= threshold]
    if not classes:
        return []
    maps = output_maps(windows, probs[:, classes], h, w).numpy()
    dets = []
    for c, heat in zip(classes, maps):
        labels, _ = ndimage.label(heat >= MAP_FRACTION * heat.max(), structure=np.ones((3, 3)))
        for i, sl in enumerate(ndimage.find_objects(labels), start=1):
            score = float(heat[sl][labels[sl] == i].max())
            dets.append(Detection(VOC_CLASSES[c], score, (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)))
    return sorted(dets, key=lambda d: -d.score)


def covered(boxes_per_image: list[torch.Tensor], truth: list[GroundTruth]) -> float:
    """Share of the non-difficult objects that some box of their image overlaps at IoU >= 0.5."""
    hit = total = 0
    for boxes, t in zip(boxes_per_image, truth):
        keep = ~t.difficult
        if not keep.any():
            continue
        iou = pairwise_iou(torch.as_tensor(t.boxes[keep]), boxes.double())
        hit += int((iou.max(dim=1).values >= 0.5).sum())
        total += int(keep.sum())
    return hit / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", default=None)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--head", default=None, help="head file (default: the paper head, trained on train here)")
    parser.add_argument("--layout", action="store_true", help="add the layout regression row (module docstring)")
    parser.add_argument("--out", default=None, help="write the numbers as JSON")
    args = parser.parse_args()
    root = experiment_voc_root(args.voc)
    t_start = time.perf_counter()
    backbone = get_backbone("efficientnet_lite0")
    cache = voc_cache(backbone, "dense", args.cache)
    train = cached_split(root, "train", backbone, [cache])
    val = cached_split(root, "val", backbone, [cache])
    with tempfile.TemporaryDirectory() as tmp:
        head_file = args.head or Path(tmp) / "paper.safetensors"
        if args.head is None:
            train_voc_head(root, head_file, cache_base=args.cache, log=None)
        head, info = load_head(head_file)
    objective = info.extra.get("objective", "softmax")
    truth = ground_truth(val)
    t0 = time.perf_counter()
    rows_train, rows_val = regression_rows(cache, train, VOC_CLASSES), regression_rows(cache, val, VOC_CLASSES)
    regression = fit_box_regression(rows_train, len(VOC_CLASSES), DEFAULT_RIDGE)
    fit_seconds = time.perf_counter() - t0
    windows, probs, feats = [], [], []
    for img in val:
        c = cache.load(img.image_id)
        f = torch.from_numpy(np.array(c.features)).float()
        windows.append(torch.from_numpy(c.boxes))
        feats.append(f)
        probs.append(patch_probabilities(head, f, objective, len(VOC_CLASSES)))
    sizes = [(im.height, im.width) for im in val]
    found = {
        "regressed windows": [detect(w, p, VOC_CLASSES, s, f, regression) for w, p, f, s in
                              zip(windows, probs, feats, sizes)],
        "raw windows": [detect(w, p, VOC_CLASSES, s) for w, p, s in zip(windows, probs, sizes)],
        "output-map components": [map_components(w, p, s) for w, p, s in zip(windows, probs, sizes)],
    }
    if args.layout:
        found["windows regressed from their layout"] = layout_detections(backbone, train, val, windows, probs,
                                                                         sizes, root, args.cache)
    table, report = {}, {}
    for name, dets in found.items():
        for method in ("voc2007", "voc2010"):
            ap, m = detection_ap(dets, truth, VOC_CLASSES, method)
            table[f"{name} ({method})"] = ap
            report[f"{name} ({method})"] = {"mAP": 100 * m, "ap": (100 * ap).tolist()}
        report[f"{name} (voc2010)"]["detections_per_image"] = float(np.mean([len(d) for d in dets]))
    print("VOC val (391 images) detection AP@0.5, %, head: " + (args.head or "paper head trained on train"))
    print(format_ap_table(VOC_CLASSES, table))
    # Diagnostics: the windows' ceiling on recall, and what the regression does to the positives' IoU.
    regressed = [decode_boxes(w.repeat_interleave(len(VOC_CLASSES), 0),
                              torch.cat([regression.deltas(f, torch.full((len(f),), c)) for c in
                                         range(len(VOC_CLASSES))], 1).reshape(-1, 4))
                 for w, f in zip(windows, feats)]
    ceiling = {"any window": 100 * covered(windows, truth), "any regressed window": 100 * covered(regressed, truth)}
    print(f"\nval objects (non-difficult) with a box at IoU >= 0.5, any score: {ceiling['any window']:.1f} % of "
          f"the windows, {ceiling['any regressed window']:.1f} % after regression (any class's)")
    target = decode_boxes(rows_val.windows, rows_val.targets.float()).double()
    before = float(pairwise_iou(rows_val.windows.double(), target).diagonal().mean())
    sweep = {}
    for ridge in RIDGES:
        reg = fit_box_regression(rows_train, len(VOC_CLASSES), ridge)
        moved = decode_boxes(rows_val.windows, reg.deltas(rows_val.features.float(), rows_val.labels)).double()
        sweep[ridge] = float(pairwise_iou(moved, target).diagonal().mean())
    print(f"val positive patches ({len(rows_val.labels)}): mean IoU with their object {before:.3f}; after the "
          "regression, by ridge: " + ", ".join(f"{r:g}: {v:.3f}" for r, v in sweep.items()))
    total = time.perf_counter() - t_start
    print(f"regression fitted on {len(rows_train.labels)} train patches in {fit_seconds:.1f} s; "
          f"whole run {total:.0f} s")
    if args.out:
        atomic_write_bytes(args.out, json.dumps({"rows": report, "ceiling": ceiling, "iou_before": before,
                                                 "iou_after_by_ridge": sweep, "seconds": total}, indent=1).encode())


if __name__ == "__main__":
    main()
