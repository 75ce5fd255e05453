"""The pointing game on VOC val (TorchRay's rules, 15 px: :mod:`midlevel_fast.metrics.pointing`) in one table:
our output maps against CAM on the same backbone and the simple baselines.

    python -m experiments.pointing_game [--voc ROOT] [--cache DIR] [--out results.json] [--check 3] [--wait 3600]

Needs the dense and batched feature caches of train and val (``midlevel-fast cache --voc ROOT --split train val
--mode dense batched``); it waits for them (reading their manifests every 30 s, at most ``--wait`` seconds)
instead of building them; without the batched val images (after ``--wait`` seconds) the batched rows are left
out. Heads are trained on train (best val epoch, as ``midlevel-fast train``):

* shipped recipe: ``train_voc_head`` on the dense and batched patches with the consistency term λ = 2;
* paper head: ``train_voc_head`` defaults (dense patches only); multi-label: the same with the sigmoid objective.

Our points come from the cached features, the steps ``score_image(..., return_maps=True)`` takes: the head's
probabilities of the cached windows (dense) or grid crops (batched), then the maximum of the output map (the
paper's: per pixel, the mean over the covering windows; ``output_maps`` + ``map_points``) and of the window-sum
map (the sum over them; ``window_points``, what ``ScoreResult.points`` uses). The first ``--check`` val images are
also scored end to end with ``score_image(precision="fp32")`` and the points compared (the cache holds float16
features, so near-ties may move). Other levers on the dense probabilities: the per-pixel power mean (k = 5); the
per-pixel maximum (its point is the best window's centre, up to half a pixel: both are measured); probability-
weighted window centres. Baselines: the image centre; the pixel covered by the most dense windows (the sum map's
centre bias, no head); CAM (:mod:`midlevel_fast.baselines.cam`, the whole-image probe trained on train, best val
epoch) with the image squashed to 224×224 and with its short side at 448.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from midlevel_fast import load_model, output_maps, score_image
from midlevel_fast.backbones import get_backbone
from midlevel_fast.io.files import atomic_write_bytes
from midlevel_fast.io.image_io import load_image
from midlevel_fast.ops.aggregate.schema import covered_range
from midlevel_fast.features.grid import PAPER_SCALES, PAPER_STEP
from midlevel_fast.scoring.points import map_points, window_points
from midlevel_fast.cache.feature_cache import CacheConfig
from midlevel_fast.cache.build import default_cache_root
from midlevel_fast.baselines.cam import image_cams
from midlevel_fast.metrics.average_precision import format_ap_table, mean_average_precision
from midlevel_fast.training.evaluate import patch_probabilities
from midlevel_fast.metrics.pointing import PointingResult, played_classes, pointing_game
from midlevel_fast.baselines.probe import train_probe, whole_image_cells, whole_image_features
from midlevel_fast.training.train import TrainConfig
from midlevel_fast.datasets.voc import VOC_CLASSES, VocImage, image_labels, load_split
from midlevel_fast.recipes.voc_run import TABLE_METHODS, train_voc_head, voc_cache
from tests.helpers import experiment_voc_root

Points = list[dict[str, tuple[float, float]]]
HEADS = {"shipped recipe": (("dense", "batched"), TrainConfig(consistency=2.0)),
         "paper head": (("dense",), TrainConfig()),
         "multi-label head": (("dense",), TrainConfig(objective="multilabel"))}
# Probability-weighted window centres: weights p^5, the power mean's k.
WEIGHT_POWER = 5.0


def cached_ids(base: Path, backbone: str, mode: str, feature_dim: int) -> set[str]:
    """Finished images of the paper-grid cache of ``mode`` under ``base``, read from its manifests only: opening a
    cache (FeatureCache) removes temporaries, which would break a build in progress."""
    want = asdict(CacheConfig(backbone, mode, list(PAPER_SCALES), PAPER_STEP, None, feature_dim))
    for d in base.glob(f"{backbone}-{mode}-*"):
        manifests = [json.loads(p.read_text()) for p in d.glob("manifest*.json")]
        if manifests and all(m["config"] == want for m in manifests):
            return {i for m in manifests for i in m["images"]}
    return set()


def wait_for_caches(base: Path, backbone: torch.nn.Module, needed: dict[str, set[str]], wait: float) -> None:
    """Polls until the cache of each mode of ``needed`` holds its images, at most ``wait`` seconds."""
    deadline = time.monotonic() + wait
    for mode, ids in needed.items():
        while missing := len(ids - cached_ids(base, backbone.name, mode, backbone.feature_dim)):
            if time.monotonic() > deadline:
                raise SystemExit(f"the {mode} cache under {base} lacks {missing} of the {len(ids)} images needed; "
                                 "build it with `midlevel-fast cache --voc ROOT --split train val --mode dense "
                                 "batched`")
            print(f"waiting for the {mode} cache: {missing} of {len(ids)} images missing", flush=True)
            time.sleep(30)


def rule_points(boxes: torch.Tensor, probs: torch.Tensor, h: int, w: int, classes: list[str],
                levers: bool = True) -> dict[str, Points]:
    """One image's points per rule from its windows ``boxes (M, 4)`` and probabilities ``probs (M, len(classes))``
    of the classes played: the mean map and the window-sum map, and with ``levers`` the other rules of the module
    docstring."""
    rules = {"mean map": map_points(output_maps(boxes, probs, h, w)), "sum map": window_points(boxes, probs, h, w)}
    if levers:
        centres = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1).double()
        rules["power-mean map (k = 5)"] = map_points(output_maps(boxes, probs.double() ** 5, h, w))
        rules["max map"] = torch.stack([max_map_point(boxes, p, h, w) for p in probs.t()])
        rules["best window's centre"] = centres[probs.argmax(0)]
        weights = probs.double() ** WEIGHT_POWER
        rules[f"weighted centres (p^{WEIGHT_POWER:g})"] = (weights.t() @ centres) / weights.sum(0)[:, None]
    return {rule: {c: tuple(p) for c, p in zip(classes, pts.tolist())} for rule, pts in rules.items()}


def max_map_point(boxes: torch.Tensor, probs: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The point of the per-pixel maximum over the covering windows of ``probs (M,)``: its maximal pixels are those
    covered by a window of the largest probability, so the map is not built; ``map_points`` of that 0/1 mask."""
    mask = torch.zeros(h, w)
    (x0, x1), (y0, y1) = covered_range(boxes[:, 0], boxes[:, 2], w), covered_range(boxes[:, 1], boxes[:, 3], h)
    for i in torch.nonzero(probs == probs.max()).flatten().tolist():
        mask[y0[i]: y1[i], x0[i]: x1[i]] = 1.0
    return map_points(mask)


def head_points(name: str, cache_by_mode: dict, head, objective: str, val: list[VocImage], rows: dict) -> None:
    """Adds to ``rows`` the points of every rule on every cached mode of head ``name``."""
    for mode, cache in cache_by_mode.items():
        per_rule: dict[str, Points] = {}
        for img in val:
            classes = played_classes(img)
            c = cache.load(img.image_id)
            probs = patch_probabilities(head, torch.from_numpy(np.asarray(c.features)), objective, len(VOC_CLASSES))
            idx = [VOC_CLASSES.index(k) for k in classes]
            for rule, pts in rule_points(torch.from_numpy(c.boxes), probs[:, idx], img.height, img.width,
                                           classes, levers=mode == "dense").items():
                per_rule.setdefault(rule, []).append(pts)
        for rule, pts in per_rule.items():
            rows[f"{name}, {mode}, {rule}"] = pts


def cam_points(backbone, train: list[VocImage], val: list[VocImage],
               short_side: int | None) -> tuple[Points, dict[str, np.ndarray]]:
    """CAM points on val: the probe trained on train's pooled features of the view, applied to val's cells; and the
    probe's per-class classification AP on val per method of ``TABLE_METHODS``."""
    pos_t = np.stack([image_labels(im)[0] for im in train])
    pos_v, ign_v = (np.stack(a) for a in zip(*[image_labels(im) for im in val]))
    x_train = whole_image_features(backbone, [im.path for im in train], short_side=short_side)
    cells = [whole_image_cells(backbone, load_image(im.path), short_side) for im in val]
    x_val = torch.cat([c.mean(dim=(2, 3)) for c in cells])
    probe, _, val_map = train_probe(x_train, pos_t, x_val, pos_v, ign_v)
    print(f"CAM probe ({short_side or 'squashed 224'}): val classification mAP {100 * val_map:.1f}", flush=True)
    with torch.no_grad():
        scores = probe(x_val).numpy()
    ap = {m: mean_average_precision(scores, pos_v, ign_v, m)[0] for m in TABLE_METHODS}
    points = []
    for img, cell in zip(val, cells):
        classes = played_classes(img)
        maps = image_cams(cell, probe, backbone, (img.height, img.width), short_side)
        pts = map_points(maps[[VOC_CLASSES.index(c) for c in classes]])
        points.append({c: tuple(p) for c, p in zip(classes, pts.tolist())})
    return points, ap


def check_against_score_image(head_file: Path, val: list[VocImage], rows: dict, n: int) -> list[dict]:
    """Points of ``score_image(precision="fp32", return_maps=True)`` on the first ``n`` val images against the
    cached-feature points of the shipped-recipe rows: ``res.points`` against the sum-map row, ``map_points(res.maps)``
    against the mean-map row; per image and mode, the largest distance."""
    model, out = load_model(head_file), []
    for i, img in enumerate(val[:n]):
        for mode in [m for m in ("dense", "batched") if f"shipped recipe, {m}, sum map" in rows]:
            res = score_image(img.path, model, mode=mode, return_maps=True, precision="fp32")
            map_pts = dict(zip(res.map_classes, map_points(res.maps).tolist()))
            for rule, theirs in (("sum map", res.points), ("mean map", map_pts)):
                mine = rows[f"shipped recipe, {mode}, {rule}"][i]
                dist = max(float(np.hypot(*np.subtract(theirs[c], p))) for c, p in mine.items())
                out.append({"image": img.image_id, "mode": mode, "rule": rule, "classes": len(mine),
                            "max_distance_px": dist})
                print(f"check {img.image_id} {mode} {rule}: score_image vs cached features, points differ by at "
                      f"most {dist:.2f} px over {len(mine)} classes", flush=True)
    return out


def coverage_points(cache, val: list[VocImage]) -> Points:
    """The sum map's centre bias alone: the pixel covered by the most windows (every probability 1)."""
    points = []
    for img in val:
        boxes = torch.from_numpy(cache.load(img.image_id).boxes)
        pt = tuple(window_points(boxes, torch.ones(len(boxes), 1), img.height, img.width)[0].tolist())
        points.append({c: pt for c in played_classes(img)})
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", default=None)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--out", default=None, help="write the numbers as JSON")
    parser.add_argument("--check", type=int, default=3, help="val images checked against score_image")
    parser.add_argument("--wait", type=float, default=3600, help="seconds to wait for the feature caches")
    args = parser.parse_args()
    root = experiment_voc_root(args.voc)
    t_start = time.perf_counter()
    backbone = get_backbone("efficientnet_lite0")
    train, val = load_split(root, "train"), load_split(root, "val")
    base = Path(args.cache) if args.cache else default_cache_root()
    train_ids, val_ids = {im.image_id for im in train}, {im.image_id for im in val}
    # Training reads both caches on train, validation the dense one on val; the batched val rows are run when that
    # cache is complete (after --wait seconds at most).
    wait_for_caches(base, backbone, {"dense": train_ids | val_ids, "batched": train_ids}, args.wait)
    try:
        wait_for_caches(base, backbone, {"batched": val_ids}, args.wait)
    except SystemExit as e:
        print(f"no batched val rows: {e}", flush=True)
    batched_val = val_ids <= cached_ids(base, backbone.name, "batched", backbone.feature_dim)
    caches = {mode: voc_cache(backbone, mode, base) for mode in ("dense", "batched")}
    # The geometric centre; TorchRay's "center" names the pixel index (w/2, h/2), i.e. our (w/2 + 0.5, h/2 + 0.5).
    rows: dict[str, Points] = {"image centre": [{c: (im.width / 2, im.height / 2) for c in played_classes(im)}
                                                for im in val],
                               "dense window coverage (no head)": coverage_points(caches["dense"], val)}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (modes, config) in HEADS.items():
            t0 = time.perf_counter()
            run = train_voc_head(root, Path(tmp) / f"{name}.safetensors", modes=modes, config=config,
                                 cache_base=base, log=None)
            seconds[f"train {name}"] = time.perf_counter() - t0
            print(f"{name}: trained in {seconds[f'train {name}']:.0f} s, val mAP {100 * run.result.best_map:.1f}",
                  flush=True)
            scored = {m: caches[m] for m in modes if m == "dense" or batched_val}
            head_points(name, scored, run.result.head.eval(), config.objective, val, rows)
        check = check_against_score_image(Path(tmp) / "shipped recipe.safetensors", val, rows, args.check)
    for short_side in (None, 448):
        t0 = time.perf_counter()
        rows[f"CAM {short_side or 224}"], _ = cam_points(backbone, train, val, short_side)
        seconds[f"CAM {short_side or 224}"] = time.perf_counter() - t0
    results: dict[str, PointingResult] = {name: pointing_game(val, pts) for name, pts in rows.items()}
    print("\npointing game, VOC val (391 images), tolerance 15 px: accuracy per class, % (last column: the mean "
          "over classes)")
    print(format_ap_table(VOC_CLASSES, {name: r.class_accuracy for name, r in results.items()}))
    total = time.perf_counter() - t_start
    print(f"\nwhole run {total:.0f} s")
    if args.out:
        report = {"rows": {name: {"accuracy": 100 * r.accuracy, "class_accuracy": (100 * r.class_accuracy).tolist(),
                                  "hits": r.hits.tolist(), "misses": r.misses.tolist()}
                           for name, r in results.items()},
                  "classes": list(VOC_CLASSES), "seconds": {**seconds, "total": total}, "check": check}
        atomic_write_bytes(args.out, json.dumps(report, indent=1).encode())


if __name__ == "__main__":
    main()
