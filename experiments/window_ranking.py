"""Does the paper head rank a tight window above a loose one? The ranking half of the diagnosis of the boxes
(docs/boxes.md).

For every non-difficult object of VOC val, the dense windows of ``score_image`` (the shipped model: its head saw
trainval, so val is optimistic for *how high* it scores objects; the question here is only how it orders windows
around one object, which the label definition decides) are split, for the object's class, into

* tight: IoU with the object >= 0.7;
* loose: windows that hold the object (intersection >= 0.9 of the object's area) at IoU < 0.5, i.e. too large.

Printed: the share of objects having both kinds whose best loose window scores at least as high as their best tight
one, the probability that a random tight window outscores a random loose one of the same object (AUC, 0.5 = no
preference), and the share of objects whose best-scoring window of the class among all windows touching it
(IoU > 0.1) reaches IoU 0.5, and 0.7 (what a detector keeping one window per object would get right).

Run: ``python -m experiments.window_ranking [--voc ROOT] [--images N]`` (about 0.5 s per image on 2 cores).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from midlevel_fast import load_model, score_image
from midlevel_fast.scoring.detections import pairwise_iou
from midlevel_fast.datasets.voc import VOC_CLASSES, load_split, object_arrays
from tests.helpers import experiment_voc_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", help="VOC2012 root (default: MIDLEVEL_FAST_VOC or ../shared/data)")
    parser.add_argument("--images", type=int, default=None, help="the first N val images (default: all)")
    args = parser.parse_args()
    images = load_split(experiment_voc_root(args.voc), "val")[: args.images]
    model = load_model()
    assert list(model.info.class_names) == list(VOC_CLASSES), "the default model must carry the VOC head"
    loose_wins = both = 0
    aucs, best_iou = [], []
    for img in images:
        res = score_image(img.path, model)
        boxes, cls, difficult = object_arrays(img)
        windows = res.windows.double()
        iou = pairwise_iou(boxes[~difficult], windows)
        x0 = torch.maximum(boxes[~difficult, None, 0], windows[None, :, 0])
        y0 = torch.maximum(boxes[~difficult, None, 1], windows[None, :, 1])
        x1 = torch.minimum(boxes[~difficult, None, 2], windows[None, :, 2])
        y1 = torch.minimum(boxes[~difficult, None, 3], windows[None, :, 3])
        inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
        area = ((boxes[~difficult, 2] - boxes[~difficult, 0]) * (boxes[~difficult, 3] - boxes[~difficult, 1]))[:, None]
        for o, c in enumerate(cls[~difficult].tolist()):
            p = res.probs[:, c].double()
            touching = iou[o] > 0.1
            if touching.any():
                best = int(torch.argmax(torch.where(touching, p, torch.tensor(-1.0, dtype=p.dtype))))
                best_iou.append(float(iou[o, best]))
            tight = p[iou[o] >= 0.7]
            loose = p[(inter[o] >= 0.9 * area[o]) & (iou[o] < 0.5)]
            if len(tight) and len(loose):
                both += 1
                loose_wins += bool(loose.max() >= tight.max())
                aucs.append(float((tight[:, None] > loose[None, :]).double().mean()
                                  + 0.5 * (tight[:, None] == loose[None, :]).double().mean()))
    b = np.array(best_iou)
    print(f"VOC2012 val, {len(images)} images, {len(b)} non-difficult objects touched by a window")
    print(f"objects with tight (IoU >= 0.7) and loose (holding it, IoU < 0.5) windows: {both}")
    print(f"  best loose window scores >= best tight one: {100 * loose_wins / max(both, 1):.1f} %")
    print(f"  P(tight window outscores loose window), mean over objects: {np.mean(aucs):.3f}")
    print(f"best-scoring touching window of the object's class reaches IoU 0.5: {100 * (b >= 0.5).mean():.1f} %, "
          f"0.7: {100 * (b >= 0.7).mean():.1f} % (mean IoU {b.mean():.3f})")


if __name__ == "__main__":
    main()
