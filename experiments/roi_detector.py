"""A first detection scorer on ROI features: what the box features pooled from the dense trunk maps give on VOC
val when they are trained with detection labels instead of the paper's patch labels.

Per image: the trunk maps once (:func:`midlevel_fast.features.roi.image_maps`), the proposals
(:func:`midlevel_fast.features.proposals.dense_proposals`), their ROI features
(:func:`midlevel_fast.features.roi.box_features`: the mid-level vector, ``--layout`` adds the four quadrant means,
``--context`` the vector of the enlarged box), and Fast R-CNN's labels against the image's objects: a proposal whose
best IoU with an object is >= 0.5 is a positive of that object's class, one whose best IoU is in [0.1, 0.5) is
background, the rest are left out, and so is one whose best match is a difficult object. The ground-truth boxes are
added as positives, as R-CNN and Fast R-CNN train on them. A linear softmax over the 20 classes and background is
trained on the train split with background sampled to three per positive; then on val every proposal's class
probabilities, per class a threshold of 0.01 and NMS at 0.3 (R-CNN's), the 100 best per image, and detection AP by
the devkit's rules (:func:`midlevel_fast.metrics.detection_ap.detection_ap`). No box regression, no hard-negative
mining, no context by default: the row of the lever table this measures is "detection labels + proposals + ROI
features".

Run: ``python -m experiments.roi_detector [--voc ROOT] [--proposals ratios] [--layout] [--images N]`` (about
0.5 s per image on 2 cores for the maps; the features of train's sampled rows are kept in memory).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from midlevel_fast.backbones import get_backbone
from midlevel_fast.datasets.voc import VOC_CLASSES, VocImage, load_split, object_arrays
from midlevel_fast.features.grid import PAPER_SCALES
from midlevel_fast.features.proposals import PROPOSAL_PRESETS, ProposalConfig, dense_proposals
from midlevel_fast.features.roi import RoiConfig, box_features, image_maps
from midlevel_fast.io.image_io import load_image
from midlevel_fast.metrics.average_precision import format_ap_table
from midlevel_fast.metrics.detection_ap import GroundTruth, detection_ap
from midlevel_fast.scoring.detections import Detection, batched_nms
from midlevel_fast.training.detection_labels import detection_labels, with_ground_truth
from tests.helpers import experiment_voc_root

PROPOSALS = {**PROPOSAL_PRESETS, "ratios": ProposalConfig(PAPER_SCALES, (2.0,), 1)}
FG_IOU, BG_LOW = 0.5, 0.1
BG_PER_FG = 3
SCORE_MIN, NMS, PER_IMAGE = 0.01, 0.3, 100


def labelled(proposals: torch.Tensor, img: VocImage) -> tuple[torch.Tensor, torch.Tensor]:
    """``(boxes, labels)``: the proposals plus the non-difficult objects' boxes, labelled by Fast R-CNN's rule
    (:func:`midlevel_fast.training.detection_labels.detection_labels`: class + 1, background 0, ignored -1)."""
    gt, cls, difficult = object_arrays(img)
    boxes = with_ground_truth(proposals, gt, difficult)
    labels, _ = detection_labels(boxes, gt, cls, difficult, positive_iou=FG_IOU, negative_iou=FG_IOU, bg_low=BG_LOW)
    return boxes.float(), labels


def sampled(labels: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Indices of every positive and of up to :data:`BG_PER_FG` background rows per positive (at least 16)."""
    fg = torch.nonzero(labels > 0).flatten()
    bg = torch.nonzero(labels == 0).flatten().numpy()
    n_bg = min(len(bg), max(16, BG_PER_FG * len(fg)))
    return torch.cat([fg, torch.from_numpy(rng.choice(bg, n_bg, replace=False)).long()])


def train_softmax(x: torch.Tensor, y: torch.Tensor, classes: int, epochs: int = 30) -> torch.nn.Linear:
    """A linear softmax over ``classes`` outputs on standardised rows, Adam with weight decay, full batches of
    4,096 rows; the standardisation is folded into the returned layer."""
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / std
    layer = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-3, weight_decay=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(z), generator=g).split(4096):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(layer(z[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        folded = torch.nn.Linear(x.shape[1], classes)
        folded.weight.copy_(layer.weight / std)
        folded.bias.copy_(layer.bias - (layer.weight * (mean / std)).sum(1))
    return folded


def detections_of(layer: torch.nn.Linear, feats: torch.Tensor, boxes: torch.Tensor) -> list[Detection]:
    """The image's detections: per class the proposals scoring at least :data:`SCORE_MIN`, NMS at :data:`NMS`,
    the :data:`PER_IMAGE` best."""
    with torch.no_grad():
        probs = torch.softmax(layer(feats), dim=1)[:, 1:]
    rows, cls = torch.nonzero(probs >= SCORE_MIN, as_tuple=True)
    scores = probs[rows, cls]
    keep = batched_nms(boxes[rows].double(), scores.double(), cls, NMS)[:PER_IMAGE]
    return [Detection(VOC_CLASSES[int(cls[i])], float(scores[i]), tuple(float(v) for v in boxes[rows[i]]))
            for i in keep.tolist()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voc", default=None)
    ap.add_argument("--proposals", choices=sorted(PROPOSALS), default="ratios")
    ap.add_argument("--layout", action="store_true")
    ap.add_argument("--context", type=float, default=None)
    ap.add_argument("--images", type=int, default=None, help="first N images of each split (default: all)")
    ap.add_argument("--precision", default="bf16")
    args = ap.parse_args()
    root = experiment_voc_root(args.voc)
    backbone = get_backbone("efficientnet_lite0")
    roi = RoiConfig(layout=args.layout, context=args.context)
    train, val = (load_split(root, s)[: args.images] for s in ("train", "val"))
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()

    def image_features(img: VocImage) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pixels = load_image(img.path)
        proposals = dense_proposals(img.width, img.height, backbone, PROPOSALS[args.proposals])
        boxes, labels = labelled(proposals, img)
        with torch.inference_mode():
            feats = box_features(image_maps(backbone, pixels, precision=args.precision), boxes, roi)
        return feats, boxes, labels

    xs, ys, n_boxes = [], [], 0
    for img in train:
        feats, boxes, labels = image_features(img)
        pick = sampled(labels, rng)
        xs.append(feats[pick].half())
        ys.append(labels[pick])
        n_boxes += len(boxes)
    t_train_feats = time.perf_counter() - t0
    layer = train_softmax(torch.cat(xs).float(), torch.cat(ys), len(VOC_CLASSES) + 1)
    dets, truth = [], []
    for img in val:
        feats, boxes, _ = image_features(img)
        dets.append(detections_of(layer, feats, boxes))
        truth.append(GroundTruth(np.array([o.box for o in img.objects]).reshape(-1, 4),
                                 [o.name for o in img.objects], np.array([o.difficult for o in img.objects])))
    per_class, mean = detection_ap(dets, truth, VOC_CLASSES)
    per_class07, mean07 = detection_ap(dets, truth, VOC_CLASSES, method="voc2007")
    label = f"{args.proposals}{' +layout' if args.layout else ''}{f' +context {args.context}' if args.context else ''}"
    print(format_ap_table(VOC_CLASSES, {f"{label} (area)": per_class, f"{label} (11-pt)": per_class07}))
    print(json.dumps({"proposals": args.proposals, "layout": args.layout, "context": args.context,
                      "train_images": len(train), "val_images": len(val), "train_rows": int(sum(len(y) for y in ys)),
                      "train_boxes_per_image": round(n_boxes / max(1, len(train))),
                      "map_voc2010": round(100 * mean, 2), "map_voc2007": round(100 * mean07, 2),
                      "seconds_train_features": round(t_train_feats, 1),
                      "seconds_total": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
