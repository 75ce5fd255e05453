"""Recall of candidate-box sets on VOC val: how many objects a detector built on them could find at all.

A detector can find only the objects some candidate box covers. This measures the geometry only (no
model, no scores): for each non-difficult val object, the best IoU with any box of the set, and so the recall at
IoU 0.5 and 0.7 and the mean best overlap (MABO), with the mean number of boxes per image. Sets, all built on
the dense mode's window lattice of EfficientNet-Lite0 at the paper's scales:

* ``square``: the dense windows ``score_image`` scores today (``dense_proposals``' ``"square"`` preset;
  checked against ``dense_windows`` on the first image);
* ``+ 1:2, 2:1``: at every square window's centre also the two rectangles of the same area with aspect ratio 2
  (``s·√2 × s/√2`` and its transpose), clipped to the image (SPPnet/Fast R-CNN's pyramid windows, ROI-pooled
  from the same trunk maps);
* ``+ half step``: the three shapes on a lattice of half the step (the centres between the windows);
* ``+ 1:3, 3:1``: aspect ratio 3 too (long objects: bottles, people standing, trains);
* ``+ scales 4.8, 5.6, 6.4``: all of that at three more scales with smaller windows (small objects): the
  library's ``DEFAULT_PROPOSALS``.

Each set is a ``ProposalConfig`` of ``midlevel_fast.features.proposals``, its boxes made by ``dense_proposals``
(clipped to the image, exact duplicates dropped) and measured by ``midlevel_fast.metrics.proposal_recall``.

Run: ``python -m experiments.proposal_recall [--voc ROOT] [--split val]`` (about a minute on 2 cores; no cache, no model
weights are read beyond the backbone's geometry).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from midlevel_fast.backbones import get_backbone
from midlevel_fast.features.dense import dense_windows
from midlevel_fast.features.grid import PAPER_SCALES
from midlevel_fast.features.proposals import DEFAULT_PROPOSALS, ProposalConfig, dense_proposals
from midlevel_fast.metrics.proposal_recall import proposal_recall
from midlevel_fast.datasets.voc import load_split, object_arrays
from tests.helpers import experiment_voc_root

SETS = {
    "square (today's dense windows)": ProposalConfig(),
    "+ 1:2, 2:1": ProposalConfig(aspect_ratios=(2.0,)),
    "+ half step": ProposalConfig(aspect_ratios=(2.0,), step_divisor=2),
    "+ 1:3, 3:1": ProposalConfig(aspect_ratios=(2.0, 3.0), step_divisor=2),
    "+ scales 4.8, 5.6, 6.4": DEFAULT_PROPOSALS,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", help="VOC2012 root (default: MIDLEVEL_FAST_VOC or ../shared/data)")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    images = load_split(experiment_voc_root(args.voc), args.split)
    backbone = get_backbone("efficientnet_lite0", pretrained=False)
    # The lattice is the dense mode's: the same boxes, in the same order, as dense_windows on one image.
    first = images[0]
    real = dense_windows(backbone, np.zeros((first.height, first.width, 3), np.uint8), PAPER_SCALES).boxes
    assert torch.allclose(real, dense_proposals(first.width, first.height, backbone, "square"), atol=1e-3), \
        "lattice differs"
    objects = [object_arrays(img) for img in images]
    print(f"VOC2012 {args.split}: {len(images)} images, non-difficult objects only\n")
    print(f"{'set':32s} {'boxes/image':>11s} {'recall@0.5':>10s} {'recall@0.7':>10s} {'MABO':>6s}")
    for name, config in SETS.items():
        res = proposal_recall([dense_proposals(img.width, img.height, backbone, config) for img in images],
                              [boxes for boxes, _, _ in objects], [difficult for _, _, difficult in objects])
        print(f"{name:32s} {res.boxes_per_image:11.0f} {100 * res.recall[0]:9.1f}% "
              f"{100 * res.recall[1]:9.1f}% {res.mabo:6.3f}")


if __name__ == "__main__":
    main()
