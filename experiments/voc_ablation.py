"""The paper's procedure on real VOC data, train → val, with its ablations, in one table.

    python -m experiments.voc_ablation [--voc ROOT] [--cache DIR] [--batched [--consistency 2 ...]] [--out results.json]

Needs the dense feature cache of train and val (``midlevel-fast cache --voc ROOT --split train val``; with
``--batched`` also the batched one, ``--mode batched``), which it builds when missing. Rows: the paper's head
(softmax over 20 + background, FCa 2048 + FCb, k = 5), k = 1 and 10, 1 and 3 adaptation layers, the multi-label
objective, batched instead of dense features, one head on the patches of both, the same with the dense/crop
consistency term (the shipped head's recipe), and the whole-image linear probe on the same backbone. Every head
keeps its best validation epoch, as `midlevel-fast train` does.

The heads trained on both kinds of patches also get the median Spearman ρ between their dense and batched class
scores over the first 50 val images, computed from the cached features (float16, fp32 head): a quick stand-in for
``python -m experiments.dense_agreement``, which runs ``score_image`` end to end.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from experiments.dense_agreement import cached_agreement
from midlevel_fast.backbones import get_backbone
from midlevel_fast.cache.feature_cache import FeatureCache
from midlevel_fast.cache.build import fill_cache
from midlevel_fast.training.consistency import consistency_pairs
from midlevel_fast.metrics.average_precision import format_ap_table
from midlevel_fast.training.evaluate import evaluate_head
from midlevel_fast.training.patches import eval_set, merge_patch_sets, patch_set
from midlevel_fast.baselines.probe import train_probe, whole_image_features
from midlevel_fast.training.train import TrainConfig, train_head
from midlevel_fast.datasets.voc import VOC_CLASSES, VocImage, image_labels, load_split
from midlevel_fast.recipes.voc_run import voc_cache
from tests.helpers import experiment_voc_root


def caches(backbone: torch.nn.Module, base: str | None, mode: str, splits: list[list[VocImage]]) -> FeatureCache:
    """The paper-grid cache of ``mode`` under ``base``, filled with every image of ``splits``."""
    cache = voc_cache(backbone, mode, base)
    for images in splits:
        fill_cache(cache, backbone, [(im.image_id, im.path) for im in images])
    return cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", default=None)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--batched", action="store_true", help="also the batched-features rows")
    parser.add_argument("--consistency", type=float, nargs="*", default=[2.0],
                        help="with --batched: consistency weights to train pooled heads with (0 is the plain row)")
    parser.add_argument("--out", default=None, help="write the numbers as JSON")
    args = parser.parse_args()
    root = experiment_voc_root(args.voc)
    backbone = get_backbone("efficientnet_lite0")
    train_images, val_images = load_split(root, "train"), load_split(root, "val")
    rows: dict[str, np.ndarray] = {}
    summary: dict[str, dict] = {}

    def record(name, head, objective, data, k, seconds):
        ap10, m10 = evaluate_head(head, data, objective, k, "voc2010")
        _, m07 = evaluate_head(head, data, objective, k, "voc2007")
        rows[name] = ap10
        summary[name] = {"mAP_voc2010": 100 * m10, "mAP_voc2007": 100 * m07, "train_seconds": seconds}
        print(f"{name:<28} mAP {100 * m10:.2f} (VOC2007 11-pt {100 * m07:.2f}), trained in {seconds:.1f} s",
              flush=True)

    modes = ["dense"] + (["batched"] if args.batched else [])
    mode_caches = {}
    for mode in modes:
        cache = mode_caches[mode] = caches(backbone, args.cache, mode, [train_images, val_images])
        val = eval_set(cache, val_images, VOC_CLASSES)
        variants = [("paper", TrainConfig())] if mode == "batched" else [
            ("paper", TrainConfig()), ("1 layer", TrainConfig(layers=1)), ("3 layers", TrainConfig(layers=3)),
            ("multi-label", TrainConfig(objective="multilabel"))]
        for name, cfg in variants:
            train = patch_set(cache, train_images, VOC_CLASSES, cfg.bg_fraction, cfg.seed, cfg.objective)
            res = train_head(train, len(VOC_CLASSES), cfg, val, log=None)
            label = f"{mode} {name}"
            record(label + " (k=5)", res.head, cfg.objective, val, 5.0, res.seconds)
            if mode == "dense" and name == "paper":
                for k in (1.0, 10.0):
                    record(f"{mode} {name} (k={k:g})", res.head, cfg.objective, val, k, res.seconds)
                summary[label + " (k=5)"]["train_rows"] = int(len(train.features))
                summary[label + " (k=5)"]["epochs"] = len(res.history)
    if args.batched:
        # One head trained on the patches of both modes, validated on dense features; with consistency > 0, the
        # shipped head's recipe.
        dense, batched = mode_caches["dense"], mode_caches["batched"]
        train = merge_patch_sets([patch_set(c, train_images, VOC_CLASSES) for c in (dense, batched)])
        weights = [0.0] + [w for w in args.consistency if w > 0]
        pairs = consistency_pairs(dense, batched, [im.image_id for im in train_images]) if len(weights) > 1 else None
        agreement_ids = [im.image_id for im in val_images[:50]]
        for weight in weights:
            cfg = TrainConfig(consistency=weight)
            res = train_head(train, len(VOC_CLASSES), cfg, eval_set(dense, val_images, VOC_CLASSES), log=None,
                             pairs=pairs)
            name = "dense+batched paper" + (f" + consistency {weight:g}" if weight else "")
            for mode, cache in mode_caches.items():
                record(f"{name}, {mode} val", res.head, cfg.objective, eval_set(cache, val_images, VOC_CLASSES),
                       5.0, res.seconds)
            rho = cached_agreement(res.head, dense, batched, agreement_ids, cfg.k)
            summary[f"{name}, dense val"]["median_rho_cached_50"] = rho
            print(f"{name:<28} median ρ dense vs batched (cached, 50 val images) {rho:.3f}", flush=True)

    t0 = time.perf_counter()
    xt = whole_image_features(backbone, [im.path for im in train_images])
    xv = whole_image_features(backbone, [im.path for im in val_images])
    pos_t = np.stack([image_labels(im)[0] for im in train_images])
    pos_v, ign_v = (np.stack(a) for a in zip(*[image_labels(im) for im in val_images]))
    _, ap, m = train_probe(xt, pos_t, xv, pos_v, ign_v)
    rows["whole-image linear probe"] = ap
    summary["whole-image linear probe"] = {"mAP_voc2010": 100 * m, "train_seconds": time.perf_counter() - t0}
    print(f"whole-image linear probe      mAP {100 * m:.2f}")
    print()
    print(format_ap_table(VOC_CLASSES, rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
