"""Presence calibration on real VOC data: how well the presence probabilities match, on images the calibration did
not see, before (the raw power-mean score read as a probability) and after, Platt scaling vs isotonic regression.

    python -m experiments.calibration [--voc ROOT] [--cache DIR] [--folds 5] [--out results.json]
                                      [--plot docs/reliability.png]

The head: the paper's, trained on train by ``train_voc_head`` with its defaults (dense features, best val epoch).
Rows of the table: per class and overall (every (image, class) pair of val pooled; images with only difficult
objects of a class left out for it), expected calibration error (15 bins) and Brier score of

* ``raw``: the power-mean score itself;
* ``cross-fit platt`` / ``cross-fit isotonic``: calibrated by cross-fit on train (out-of-fold scores of
  ``--folds`` heads, each trained on the other folds), measured on val;
* ``val platt`` / ``val isotonic``: calibrated on val itself, measured by 2-fold cross-validation over the val
  images (fit on one half, measure on the other, both ways, pooled).

Needs the dense feature cache of train and val (``midlevel-fast cache --voc ROOT --split train val``); the
reliability diagram needs matplotlib (``pip install 'midlevel_fast[plots]'``).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from midlevel_fast.model.head import load_head
from midlevel_fast.model.presence import CALIBRATION_METHODS, presence_probabilities
from midlevel_fast.recipes.calibrate import FitData, cross_fit_folds, cross_fit_head_scores, held_out_scores
from midlevel_fast.training.calibration_fit import fit_calibration
from midlevel_fast.metrics.average_precision import mean_average_precision
from midlevel_fast.metrics.reliability import (ReliabilityBins, brier_score, expected_calibration_error,
                                                reliability_bins)
from midlevel_fast.recipes.voc_run import train_voc_head
from tests.helpers import experiment_voc_root


def fit_and_apply(fit: FitData, scores: torch.Tensor, method: str, k: float, classes: list[str]) -> torch.Tensor:
    """Presence of ``scores`` under a ``method`` calibration fitted on ``fit``."""
    cal = fit_calibration(fit.scores, fit.positives, fit.ignore, method, k, classes)
    return presence_probabilities(scores, cal).double()


def two_fold(val: FitData, method: str, k: float, classes: list[str], seed: int) -> torch.Tensor:
    """Presence of every val image from a calibration fitted on the other half of val."""
    out = torch.zeros_like(val.scores)
    for held in cross_fit_folds(len(val.image_ids), 2, seed):
        rest = np.setdiff1d(np.arange(len(val.image_ids)), held)
        half = FitData(val.scores[rest], val.positives[rest], val.ignore[rest], [])
        out[held] = fit_and_apply(half, val.scores[held], method, k, classes)
    return out


def table(classes: list[str], metrics: dict[str, dict]) -> str:
    """One line per class and ``overall``; per prediction, ECE then Brier, both in %."""
    names = list(metrics)
    width = max(len(c) for c in classes + ["overall"])
    head = " " * width + "".join(f" | {n:^17}" for n in names)
    sub = " " * width + "".join(" |     ECE    Brier" for _ in names)
    lines = [head, sub, "-" * len(sub)]
    for c, label in enumerate(classes + ["overall"]):
        cells = []
        for n in names:
            m = metrics[n]
            e, b = (m["ece"][c], m["brier"][c]) if c < len(classes) else (m["ece_overall"], m["brier_overall"])
            cells.append(f" | {100 * e:7.2f} {100 * b:8.2f}")
        lines.append(label.ljust(width) + "".join(cells))
    return "\n".join(lines)


def plot(path: str, curves: dict[str, ReliabilityBins], title: str) -> None:
    """The reliability diagram of ``curves`` (name -> bins), with the pairs per bin below, titled ``title``."""
    # Deferred: matplotlib is an optional dependency (the "plots" extra), needed only for this picture.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    edges = next(iter(curves.values())).edges
    centres = (edges[:-1] + edges[1:]) / 2
    for i, (name, b) in enumerate(curves.items()):
        full = b.counts > 0
        top.plot(b.confidence[full], b.frequency[full], marker="o", markersize=4, label=name)
        bottom.bar(centres + (i - (len(curves) - 1) / 2) * 0.012, b.counts, width=0.012, label=name)
    top.set_ylabel("fraction of pairs where the class is present")
    top.set_title(title)
    top.legend(loc="upper left", fontsize=8)
    bottom.set_yscale("log")
    bottom.set_xlabel("predicted probability of presence")
    bottom.set_ylabel("pairs per bin")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", default=None)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the numbers as JSON")
    parser.add_argument("--plot", default=None, help="write the reliability diagram (PNG)")
    args = parser.parse_args()
    root = experiment_voc_root(args.voc)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        head_path = Path(tmp) / "head.safetensors"
        train_voc_head(root, head_path, cache_base=args.cache, log=None)
        head, info = load_head(head_path)
    print(f"head trained on train in {time.perf_counter() - t0:.0f} s (best epoch {info.extra['best_epoch']}, "
          f"val mAP {100 * info.extra['val_map']:.2f})", flush=True)
    t1 = time.perf_counter()
    crossed = cross_fit_head_scores(info, root, args.folds, args.seed, args.cache)
    print(f"cross-fit on train, {args.folds} folds: {time.perf_counter() - t1:.0f} s", flush=True)
    val = held_out_scores(head, info, root, "val", args.cache)
    classes, k = info.class_names, info.k
    predictions = {"raw": val.scores}
    for method in CALIBRATION_METHODS:
        predictions[f"cross-fit {method}"] = fit_and_apply(crossed, val.scores, method, k, classes)
    for method in CALIBRATION_METHODS:
        predictions[f"val {method}"] = two_fold(val, method, k, classes, args.seed)
    metrics = {}
    for name, p in predictions.items():
        ece, ece_all = expected_calibration_error(p, val.positives, val.ignore)
        brier, brier_all = brier_score(p, val.positives, val.ignore)
        _, m_ap = mean_average_precision(p.numpy(), val.positives.numpy(), val.ignore.numpy())
        kept = p[~val.ignore]
        # How much ranking a calibration gives up: pairs put at exactly 0 or 1, and the distinct values left.
        metrics[name] = {"ece": ece, "ece_overall": ece_all, "brier": brier, "brier_overall": brier_all, "mAP": m_ap,
                         "at_0_or_1": float(((kept == 0) | (kept == 1)).double().mean()),
                         "distinct": len(torch.unique(kept))}
    print(f"\nVOC val ({len(val.image_ids)} images), ECE (15 bins) and Brier score in %:")
    print(table(classes, metrics))
    for n, m in metrics.items():
        print(f"{n}: mAP (VOC2010+) {100 * m['mAP']:.2f}, {100 * m['at_0_or_1']:.1f} % of the pairs at exactly 0 or 1, "
              f"{m['distinct']} distinct values")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.plot:
        plot(args.plot, {n: reliability_bins(predictions[n], val.positives, val.ignore)
                         for n in ("raw", "cross-fit platt", "cross-fit isotonic")},
             f"VOC val, {len(val.image_ids)} images x {len(classes)} classes, head trained on train")
        print(f"reliability diagram -> {args.plot}")
    if args.out:
        summary = {"classes": classes, "val_images": len(val.image_ids), "folds": args.folds, "seed": args.seed,
                   "head": {"best_epoch": info.extra["best_epoch"], "val_map": info.extra["val_map"]},
                   "metrics": {n: {key: (v.tolist() if isinstance(v, np.ndarray) else v) for key, v in m.items()}
                               for n, m in metrics.items()}}
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
