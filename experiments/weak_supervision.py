"""Learning from image-level labels on VOC (train -> val) in one table: classification mAP and the pointing game
(TorchRay's rules, 15 px) of heads trained with boxes and without them, and of the whole-image probe.

    python -m experiments.weak_supervision [--voc ROOT] [--cache DIR] [--out results.json] [--only NAME ...]

Rows, every head trained on the dense windows of VOC train, best val epoch (as ``midlevel-fast train``):

* ``boxes (paper head)``: box supervision, the paper's softmax head (``train_voc_head`` defaults);
* ``image labels, <pooling>, sigmoid``: ``supervision="image"`` (:mod:`midlevel_fast.training.weak`), per-class
  sigmoids (the 2015 paper's), the windows of each image pooled per class by global max (the 2015 paper's),
  power mean (k = 5) or log-sum-exp (r = 10);
* ``whole-image probe (CAM 448)``: the linear probe on the pooled trunk features of the image at short side 448,
  and its class activation maps (:mod:`midlevel_fast.baselines.cam`).

Classification: AP per class from each head's image score (the power mean k = 5 of the window probabilities, what
``score_image`` reports whatever the pooling used in training), VOC2007 11-point and VOC2010 area. Pointing: the
maximum of the window-sum map, what ``ScoreResult.points`` gives, and of the paper's mean map, from the cached
dense features. Needs the dense feature cache of train and val (``midlevel-fast cache --voc ROOT --split train
val``); it is the same cache box training reads, so nothing new is computed for the image-level heads.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from experiments.pointing_game import cam_points, head_points
from midlevel_fast.backbones import get_backbone
from midlevel_fast.io.files import atomic_write_bytes
from midlevel_fast.cache.build import default_cache_root
from midlevel_fast.metrics.average_precision import format_ap_table
from midlevel_fast.training.evaluate import evaluate_head
from midlevel_fast.training.patches import eval_set, labelled_set, patch_set
from midlevel_fast.metrics.pointing import pointing_game
from midlevel_fast.datasets.tags import tag_arrays, voc_tags
from midlevel_fast.training.train import TrainConfig, train_head
from midlevel_fast.datasets.voc import VOC_CLASSES, load_split
from midlevel_fast.recipes.voc_run import TABLE_METHODS, voc_cache
from tests.helpers import experiment_voc_root

HEADS = {
    "boxes (paper head)": TrainConfig(),
    "image labels, max, sigmoid": TrainConfig(supervision="image", pooling="max", objective="multilabel"),
    "image labels, power mean k=5, sigmoid": TrainConfig(supervision="image", pooling="power-mean",
                                                         objective="multilabel"),
    "image labels, log-sum-exp r=10, sigmoid": TrainConfig(supervision="image", pooling="log-sum-exp",
                                                           objective="multilabel"),
}
PROBE = "whole-image probe (CAM 448)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", default=None)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--out", default=None, help="write the numbers as JSON")
    parser.add_argument("--only", nargs="*", default=None, help="rows to run (default: all)")
    args = parser.parse_args()
    root = experiment_voc_root(args.voc)
    t_start = time.perf_counter()
    backbone = get_backbone("efficientnet_lite0")
    cache = voc_cache(backbone, "dense", args.cache or default_cache_root())
    train, val = load_split(root, "train"), load_split(root, "val")
    missing = [im.image_id for im in train + val if im.image_id not in cache]
    if missing:
        raise SystemExit(f"the dense cache {cache.root} lacks {len(missing)} train/val images; build it with "
                         "`midlevel-fast cache --voc ROOT --split train val`")
    t0 = time.perf_counter()
    tags = voc_tags(root, "train")
    image_set = labelled_set(cache, [t.image_id for t in tags], *tag_arrays(tags, VOC_CLASSES))
    val_set = eval_set(cache, val, VOC_CLASSES)
    print(f"loaded {len(image_set.features)} train and {len(val_set.features)} val windows in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    chosen = args.only if args.only is not None else [*HEADS, PROBE]
    ap: dict[str, dict[str, np.ndarray]] = {}
    points: dict[str, list] = {}
    seconds: dict[str, float] = {}
    for name, config in HEADS.items():
        if name not in chosen:
            continue
        t0 = time.perf_counter()
        rows = image_set if config.supervision == "image" else patch_set(cache, train, VOC_CLASSES)
        result = train_head(rows, len(VOC_CLASSES), config, val_set,
                            log=lambda line, name=name: print(f"  {name}: {line}", flush=True))
        seconds[name] = time.perf_counter() - t0
        ap[name] = {m: evaluate_head(result.head, val_set, config.objective, config.k, m)[0] for m in TABLE_METHODS}
        head_points(name, {"dense": cache}, result.head, config.objective, val, points)
        print(f"{name}: {len(result.history)} epochs in {seconds[name]:.0f} s (best {result.best_epoch}), val mAP "
              f"{100 * np.nanmean(ap[name]['voc2010']):.1f}", flush=True)
    if PROBE in chosen:
        t0 = time.perf_counter()
        points[PROBE], ap[PROBE] = cam_points(backbone, train, val, 448)
        seconds[PROBE] = time.perf_counter() - t0
    played = {name: pointing_game(val, pts) for name, pts in points.items()}
    print("\nclassification AP, VOC val (391 images), %")
    print(format_ap_table(VOC_CLASSES, {f"{name} [{m}]": a for name, per in ap.items() for m, a in per.items()}))
    print("\npointing game, VOC val, tolerance 15 px: accuracy per class, %")
    print(format_ap_table(VOC_CLASSES, {name: r.class_accuracy for name, r in played.items()}))
    print("\nsummary: mAP VOC2007 / VOC2010, pointing (sum map, mean map), training seconds")
    for name in ap:
        pt = [100 * played[key].accuracy for key in (f"{name}, dense, sum map", f"{name}, dense, mean map", name)
              if key in played]
        voc07, voc10 = (100 * np.nanmean(ap[name][m]) for m in ("voc2007", "voc2010"))
        print(f"  {name:42s} {voc07:5.1f} / {voc10:5.1f}"
              f"   {' / '.join(f'{p:.1f}' for p in pt)}   {seconds[name]:.0f} s")
    total = time.perf_counter() - t_start
    print(f"\nwhole run {total:.0f} s")
    if args.out:
        report = {"map": {name: {m: 100 * float(np.nanmean(a)) for m, a in per.items()} for name, per in ap.items()},
                  "ap": {name: {m: (100 * a).tolist() for m, a in per.items()} for name, per in ap.items()},
                  "pointing": {name: {"accuracy": 100 * r.accuracy, "class_accuracy": (100 * r.class_accuracy).tolist()}
                               for name, r in played.items()},
                  "classes": list(VOC_CLASSES), "seconds": {**seconds, "total": total}}
        atomic_write_bytes(args.out, json.dumps(report, indent=1).encode())


if __name__ == "__main__":
    main()
