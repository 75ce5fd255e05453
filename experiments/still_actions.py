"""The paper's action task on real photos: ``../shared/data/still-actions`` (6 actions, train 30 / val 10 per class,
the person box is the whole image), train -> val, every row twice: on the images as given, and with every image
first resized to 224×224 (each class has one image size in this set, so size, aspect and the mirror padding of a
square patch can give the class away; a method that wins only with the cue has not won).

    python -m experiments.still_actions [--data DIR] [--cache DIR] [--out results.json]

Rows (EfficientNet-Lite0, best val epoch as ``midlevel-fast train``):

* ``whole-image probe``: the linear probe on the pooled features of the image squashed to 224×224
  (:mod:`midlevel_fast.baselines.probe`);
* ``square patch, frozen``: ``train --task boxes`` (one square patch, mirror-padded, the paper's section 5);
* ``square patch, --unfreeze top``: the same with Lite0's last stage and head conv trained at a tenth of the rate;
* ``multi-patch (dense, k = 5)``: the object pipeline for contrast, image scores the power mean k = 5 of the dense
  window probabilities. Its head is trained from the photos' labels (``--supervision image``, max pooling,
  sigmoids): with the paper's box rules and the whole image as the box, a window is positive only if it covers
  60 % of the image, which no square window of a 150×300 photo does, so two classes had no positive at all
  (measured: 53 % accuracy).

Per row: per-class AP (VOC2010 area), mAP, accuracy and the mean log-loss of the true class on val (class
probabilities renormalised over the 6 classes; for the multi-patch row the k-th root of the power mean, a mean
probability). Val is 60 photos: one image is 1.7 points of accuracy, so no winner is claimed from a difference of
one or two images.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from midlevel_fast.backbones import get_backbone
from midlevel_fast.io.files import atomic_write_bytes
from midlevel_fast.io.image_io import load_image
from midlevel_fast.datasets.box_samples import BoxSample, imagefolder_samples, sample_arrays
from midlevel_fast.recipes.box_task import BOX_BATCH_SIZE, evaluate_probabilities, train_box_head
from midlevel_fast.cache.build import default_cache_root, fill_cache
from midlevel_fast.metrics.average_precision import format_ap_table
from midlevel_fast.training.evaluate import image_scores, patch_probabilities
from midlevel_fast.training.patches import labelled_set
from midlevel_fast.baselines.probe import train_probe, whole_image_features
from midlevel_fast.training.train import TrainConfig, train_head
from midlevel_fast.recipes.voc_run import voc_cache
from tests.helpers import REPO

# The cue-free variant: every photo resized to one square size before anything sees it.
SQUARE = 224
ROWS = ("whole-image probe", "square patch, frozen", "square patch, --unfreeze top", "multi-patch (dense, k = 5)")


def squared_copy(root: Path, out: Path) -> Path:
    """``root``'s ImageFolder with every image resized to SQUARE×SQUARE (Lanczos), written under ``out``."""
    for path in sorted(root.glob("*/*/*.jpg")):
        target = out / path.relative_to(root)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(load_image(path)).resize((SQUARE, SQUARE), Image.Resampling.LANCZOS).save(target,
                                                                                                    quality=95)
    return out


def probe_row(train: list[BoxSample], val: list[BoxSample], classes: list[str]) -> np.ndarray:
    bb = get_backbone("efficientnet_lite0")
    x_train, x_val = (whole_image_features(bb, [s.path for s in part]) for part in (train, val))
    one_hot = [np.eye(len(classes), dtype=bool)[sample_arrays(part, classes)] for part in (train, val)]
    layer, _, _ = train_probe(x_train, one_hot[0], x_val, one_hot[1], np.zeros_like(one_hot[1]))
    with torch.no_grad():
        return torch.sigmoid(layer(x_val)).numpy()


def multi_patch_row(train: list[BoxSample], val: list[BoxSample], classes: list[str], cache_base: Path,
                    k: float = 5.0) -> np.ndarray:
    """The object pipeline's scores of ``val``: a head trained on every dense window of the train photos against
    their labels (``--supervision image``, max pooling and sigmoids as in Oquab et al. 2015), image scores the
    power mean k of the window probabilities, returned as its k-th root (a mean probability)."""
    bb = get_backbone("efficientnet_lite0")
    cache = voc_cache(bb, "dense", cache_base)
    fill_cache(cache, bb, [(s.sample_id, s.path) for s in train + val])
    one_hot = [np.eye(len(classes), dtype=bool)[sample_arrays(part, classes)] for part in (train, val)]
    sets = [labelled_set(cache, [s.sample_id for s in part], hot, np.zeros_like(hot))
            for part, hot in zip((train, val), one_hot)]
    config = TrainConfig(supervision="image", pooling="max", objective="multilabel", k=k)
    result = train_head(sets[0], len(classes), config, sets[1], log=None)
    probs = patch_probabilities(result.head, sets[1].features, config.objective, len(classes))
    return image_scores(probs, sets[1].image_index, len(val), k).numpy() ** (1 / k)


def run_variant(root: Path, cache_base: Path, work: Path) -> dict:
    """Every row of ROWS trained on ``root``'s train split and evaluated on its val split."""
    train, classes = imagefolder_samples(root, "train")
    val, _ = imagefolder_samples(root, "val", classes)
    labels = sample_arrays(val, classes)
    rows: dict[str, dict] = {}
    for name in ROWS:
        t0 = time.perf_counter()
        if name == ROWS[0]:
            ev = evaluate_probabilities(probe_row(train, val, classes), labels)
        elif name == ROWS[3]:
            ev = evaluate_probabilities(multi_patch_row(train, val, classes, cache_base), labels)
        else:
            config = TrainConfig(unfreeze="top" if "unfreeze" in name else "none", batch_size=BOX_BATCH_SIZE)
            ev = train_box_head(train, classes, work / "head.safetensors", val, config=config,
                                cache_base=cache_base, log=None).val
        rows[name] = {"ap": ev.ap.tolist(), "map": ev.map, "accuracy": ev.accuracy, "log_loss": ev.log_loss,
                      "seconds": time.perf_counter() - t0}
        print(f"  {name}: mAP {100 * ev.map:.1f}  accuracy {100 * ev.accuracy:.1f} %  log-loss {ev.log_loss:.3f}  "
              f"({rows[name]['seconds']:.0f} s)", flush=True)
    return {"classes": classes, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "still-actions"))
    parser.add_argument("--cache", default=None, help="feature cache directory (default: the usual one)")
    parser.add_argument("--out", default=None, help="write the numbers as JSON")
    args = parser.parse_args()
    root = Path(args.data)
    if not (root / "train").is_dir():
        raise SystemExit(f"{root}: no still-actions ImageFolder there (train/<Class>/*.jpg); give --data")
    cache_base = Path(args.cache) if args.cache else default_cache_root()
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # The squared copy lives beside the caches so that a rerun finds its features (ids are by content).
        squared = squared_copy(root, cache_base / f"still-actions-{SQUARE}")
        for variant, data in (("as given", root), (f"resized to {SQUARE}x{SQUARE}", squared)):
            print(f"{variant}:", flush=True)
            report[variant] = run_variant(data, cache_base, work)
    for variant, result in report.items():
        print(f"\nval AP, {variant}, %")
        print(format_ap_table(result["classes"], {name: np.asarray(r["ap"]) for name, r in result["rows"].items()}))
    print("\nsummary (val, 60 photos): mAP / accuracy / log-loss, as given | resized")
    for name in ROWS:
        cells = [report[v]["rows"][name] for v in report]
        print(f"  {name:32s} " + " | ".join(f"{100 * c['map']:5.1f} / {100 * c['accuracy']:5.1f} % / "
                                             f"{c['log_loss']:.3f}" for c in cells))
    if args.out:
        atomic_write_bytes(args.out, json.dumps(report, indent=1).encode())


if __name__ == "__main__":
    main()
