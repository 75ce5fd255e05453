"""VOC val mAP of the dense or batched mode per trunk precision, with one head trained on float32 features.

    python -m experiments.precision_map [--voc ROOT] [--cache DIR] [--mode dense|batched] [--precisions fp32 bf16]
                                        [--out F.json]

The paper head is trained on the float32 cache of VOC train in that mode (``midlevel-fast cache --voc ROOT
--split train val [--mode batched]``), then evaluated on VOC val (391 images) with the val features computed
again in each precision by the prepared backbone (:mod:`midlevel_fast.backbones.prepared`), exactly as
``score_image`` computes them. The features of each precision other than ``fp32`` are cached under
``DIR/precision-<name>`` (dense) or ``DIR/precision-<name>-batched`` (resumable).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from midlevel_fast.backbones import get_backbone
from midlevel_fast.io.files import atomic_write_bytes
from midlevel_fast.features.patch_features import patch_features
from midlevel_fast.cache.build import build_cache, default_cache_root
from midlevel_fast.metrics.average_precision import format_ap_table
from midlevel_fast.training.evaluate import evaluate_head
from midlevel_fast.training.patches import eval_set, patch_set
from midlevel_fast.training.train import TrainConfig, train_head
from midlevel_fast.datasets.voc import VOC_CLASSES, load_split
from midlevel_fast.recipes.voc_run import voc_cache
from tests.helpers import experiment_voc_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", default=None)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--mode", choices=["dense", "batched"], default="dense")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--out", default=None, help="write the numbers as JSON")
    args = parser.parse_args()
    root = experiment_voc_root(args.voc)
    base = Path(args.cache) if args.cache else default_cache_root()
    backbone = get_backbone("efficientnet_lite0")
    mode = args.mode
    reference = voc_cache(backbone, mode, base)
    train, val = load_split(root, "train"), load_split(root, "val")
    missing = [im.image_id for im in train + val if im.image_id not in reference]
    if missing:
        raise SystemExit(f"the {mode} cache {reference.root} lacks {len(missing)} train/val images; build it with "
                         f"`midlevel-fast cache --voc ROOT --split train val --mode {mode}`")
    t0 = time.perf_counter()
    config = TrainConfig()
    head = train_head(patch_set(reference, train, VOC_CLASSES), len(VOC_CLASSES), config,
                      eval_set(reference, val, VOC_CLASSES)).head
    print(f"head trained on float32 train features in {time.perf_counter() - t0:.0f} s", flush=True)
    ap, seconds = {}, {}
    for precision in args.precisions:
        suffix = "" if mode == "dense" else f"-{mode}"
        cache = reference if precision == "fp32" else voc_cache(backbone, mode, base / f"precision-{precision}{suffix}")
        t0 = time.perf_counter()

        def extract(img, image_id, precision=precision, cache=cache):
            return patch_features(backbone, img, mode, cache.config.scales, cache.config.grid_step,
                                  cache.config.window_step, precision=precision)

        build_cache(cache, [(im.image_id, im.path) for im in val], extract)
        seconds[precision] = time.perf_counter() - t0
        ap[precision] = evaluate_head(head, eval_set(cache, val, VOC_CLASSES), config.objective, config.k)[0]
        print(f"{precision}: val mAP {100 * np.nanmean(ap[precision]):.2f} ({seconds[precision]:.0f} s to compute "
              "the features; 0 when cached)", flush=True)
    print("\nclassification AP, VOC val (391 images), %, VOC2010 method")
    print(format_ap_table(VOC_CLASSES, ap))
    if args.out:
        report = {"map": {p: 100 * float(np.nanmean(a)) for p, a in ap.items()},
                  "ap": {p: (100 * a).tolist() for p, a in ap.items()}, "feature_seconds": seconds}
        atomic_write_bytes(args.out, json.dumps(report, indent=2).encode())


if __name__ == "__main__":
    main()
