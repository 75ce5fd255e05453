"""Our VOC detection AP@0.5 against pycocotools' on real val detections: the raw-windows and output-map rows of
:mod:`experiments.detection`, scored by :func:`midlevel_fast.metrics.detection_ap.detection_ap` and by COCOeval
configured as close to VOC as it goes (:func:`tests.test_library_oracles_metrics.coco_evaluation`: IoU 0.5 only,
area all, maxDets beyond the detections, difficult objects as ``iscrowd``).

    python -m experiments.detection_oracles [--voc ROOT] [--cache DIR] [--head FILE] [--images N]

The first ``--images`` val images (all 391 by default) are cached in the dense mode when missing (all 391: 353 s
on 2 cores with the caching, 127 s with the cache there) and scored by ``--head`` (default: the shipped head; it
was trained on trainval, so its val detections are optimistic, which matters not at all here: both scorers see the same
detections). The regressed-windows rows are left out: the shipped head's regression reads the windows' layout, a second
cache.

Columns, per class and their mean:

* ``VOC2010+ (ours)``: the devkit's rules, area under the precision envelope;
* ``COCO matching, VOC area``: COCO's own labelling of the detections (``evalImgs``: matched, unmatched,
  ignored) with our area AP (:func:`midlevel_fast.metrics.average_precision.ranked_average_precision`), so that
  ``ours − this`` is the matching's share of the difference: COCO matches a detection to the best *unmatched*
  non-crowd box (a second detection of an object goes on to a neighbour; VOC: a duplicate, false positive),
  prefers non-crowd boxes to crowd ones (VOC: the max-IoU box even when difficult, which makes the detection
  ignored), and measures a crowd box's overlap as ``intersection / area(detection)`` (VOC: the IoU);
* ``COCO (101-point)``: COCOeval's AP, so that ``this − the previous`` is the interpolation's share: the mean of
  the envelope at the recalls ``0, 0.01, …, 1`` (at the first rank reaching each), not the area.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from experiments.detection import ground_truth, map_components
from midlevel_fast.backbones import get_backbone
from midlevel_fast.model.head import load_head
from midlevel_fast.model.classifier import shipped_head_path
from midlevel_fast.scoring.detections import Detection, detect
from midlevel_fast.cache.build import fill_cache
from midlevel_fast.metrics.detection_ap import GroundTruth, detection_ap
from midlevel_fast.metrics.average_precision import format_ap_table, ranked_average_precision
from midlevel_fast.training.evaluate import patch_probabilities
from midlevel_fast.datasets.voc import VOC_CLASSES, load_split
from midlevel_fast.recipes.voc_run import voc_cache
from tests.helpers import experiment_voc_root
from tests.oracle.coco import coco_ap, coco_evaluation, coco_ranked_hits


def scored(detections: list[list[Detection]], truth: list[GroundTruth]) -> dict[str, np.ndarray]:
    """The three per-class AP columns of the module docstring for one set of detections."""
    ours, _ = detection_ap(detections, truth, VOC_CLASSES, "voc2010")
    evaluator = coco_evaluation(detections, truth, VOC_CLASSES)
    coco_area = []
    for k in range(len(VOC_CLASSES)):
        _, hits, n_pos = coco_ranked_hits(evaluator, k)
        coco_area.append(ranked_average_precision(np.cumsum(hits.astype(np.int64)), n_pos, "voc2010"))
    return {"VOC2010+ (ours)": ours, "COCO matching, VOC area": np.array(coco_area),
            "COCO (101-point)": coco_ap(evaluator)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", default=None)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--head", default=None, help="head file (default: the shipped head)")
    parser.add_argument("--images", type=int, default=None, help="the first N val images (default: all)")
    args = parser.parse_args()
    root = experiment_voc_root(args.voc)
    head_file = args.head or shipped_head_path()
    if head_file is None:
        raise SystemExit("this build ships no head: give one with --head FILE")
    t_start = time.perf_counter()
    backbone = get_backbone("efficientnet_lite0")
    cache = voc_cache(backbone, "dense", args.cache)
    val = load_split(root, "val")[:args.images]
    fill_cache(cache, backbone, [(im.image_id, im.path) for im in val])
    head, info = load_head(head_file)
    objective = info.extra.get("objective", "softmax")
    found: dict[str, list[list[Detection]]] = {"raw windows": [], "output-map components": []}
    for img in val:
        c = cache.load(img.image_id)
        f = torch.from_numpy(np.array(c.features)).float()
        w = torch.from_numpy(c.boxes)
        p = patch_probabilities(head, f, objective, len(VOC_CLASSES))
        found["raw windows"].append(detect(w, p, VOC_CLASSES, (img.height, img.width)))
        found["output-map components"].append(map_components(w, p, (img.height, img.width)))
    truth = ground_truth(val)
    table, shares = {}, []
    for name, dets in found.items():
        columns = scored(dets, truth)
        table.update({f"{name}: {column}": ap for column, ap in columns.items()})
        ours, coco_matching, coco = (100 * np.nanmean(ap) for ap in columns.values())
        shares.append(f"{name}: mAP {ours:.2f} (ours) − {coco:.2f} (COCO) = {ours - coco:+.2f}, of which matching "
                      f"{ours - coco_matching:+.2f}, interpolation {coco_matching - coco:+.2f}")
    n_difficult = sum(int(t.difficult.sum()) for t in truth)
    print(f"VOC val, first {len(val)} images ({n_difficult} difficult objects), detection AP@0.5 in %, head: "
          f"{head_file}")
    print(format_ap_table(VOC_CLASSES, table))
    print("\n".join(shares))
    print(f"whole run {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
