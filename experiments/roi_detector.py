"""The detection scorer on ROI features, lever by lever: what each of detection labels, hard negatives, non-square
proposals, the ROI layout, the context box, (iterated) box regression and box voting adds on VOC val, from the
frozen trunk and the 422 train images.

Per image: the trunk maps once (cached on disk, :mod:`experiments.detector_maps`), the proposals
(:func:`midlevel_fast.features.proposals.dense_proposals`, the "ratios" set: the dense squares and their 1:2 and
2:1 rectangles), their ROI features with layout and context (:func:`midlevel_fast.features.roi.box_features`;
narrower feature sets are column slices of it), and Fast R-CNN's labels (foreground IoU >= 0.5, background in
[0.1, 0.5), the ground-truth boxes added). Each row of the table trains its own linear softmax over the 20 classes
and background (:func:`train_softmax`) on its features; ``+hard`` mines hard background over all train images
(:func:`midlevel_fast.training.hard_negatives.mine_hard_negatives`, two passes, hardness the log-odds of object
against background); ``+regression`` fits R-CNN's per-class ridge box regression
(:func:`midlevel_fast.training.box_regression_fit.fit_box_regression`) on the foreground rows, applied once or
iterated (the features re-pooled at the regressed box and the box re-scored and regressed again); ``+voting``
replaces each box kept by NMS with the score-weighted mean of its class's candidates at IoU >= 0.5 with it.
Per class a threshold of 0.01, NMS at 0.3 (R-CNN's), the 100 best per image, and detection AP by the devkit's rules
(:func:`midlevel_fast.metrics.detection_ap.detection_ap`).

Weight decay and ridge are chosen on a held-out quarter of the train images (never val), then each row is
retrained on all of train.

Run: ``python -m experiments.roi_detector [--voc ROOT] [--cache DIR] [--images N] [--rows NAME ...]``.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from experiments.detector_maps import DEFAULT_CACHE, cached_maps
from midlevel_fast.backbones import get_backbone
from midlevel_fast.datasets.voc import VOC_CLASSES, VocImage, load_split, object_arrays
from midlevel_fast.features.grid import PAPER_SCALES
from midlevel_fast.features.proposals import ProposalConfig, dense_proposals
from midlevel_fast.features.roi import PyramidMaps, RoiConfig, box_features
from midlevel_fast.metrics.average_precision import format_ap_table
from midlevel_fast.metrics.detection_ap import GroundTruth, detection_ap
from midlevel_fast.model.box_regression import BoxRegression
from midlevel_fast.scoring.detections import Detection, batched_nms, decode_boxes, encode_boxes, pairwise_iou
from midlevel_fast.training.box_regression_fit import RegressionRows, fit_box_regression
from midlevel_fast.training.detection_labels import detection_labels, with_ground_truth
from midlevel_fast.training.hard_negatives import mine_hard_negatives
from tests.helpers import experiment_voc_root

RATIOS = ProposalConfig(PAPER_SCALES, (2.0,), 1)
SQUARES = ProposalConfig()
FG_IOU, BG_LOW = 0.5, 0.1
BG_PER_FG = 3
SCORE_MIN, NMS, PER_IMAGE, VOTE_IOU = 0.01, 0.3, 100, 0.5
ROI = RoiConfig(layout=True, context=1.5)
MID, LAYOUT, CONTEXT = 1280, 1280 + 4 * 1280, 1280 + 4 * 1280 + 1280
WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1)
RIDGES = (1.0, 10.0, 100.0)
CANDIDATES_PER_CLASS = 200


@dataclass(frozen=True)
class Row:
    """One row of the lever table: the proposals (``squares`` only, or with the rectangles), the feature columns
    (``dim``: :data:`MID`, :data:`LAYOUT` or :data:`CONTEXT`), hard negatives, regression steps, box voting."""

    name: str
    squares: bool
    dim: int
    hard: bool = False
    steps: int = 0
    voting: bool = False


ROWS = [
    Row("labels (squares, mid-level)", True, MID),
    Row("+ hard negatives", True, MID, hard=True),
    Row("+ 1:2/2:1 proposals", False, MID, hard=True),
    Row("+ ROI layout", False, LAYOUT, hard=True),
    Row("+ context", False, CONTEXT, hard=True),
    Row("+ box regression", False, CONTEXT, hard=True, steps=1),
    Row("+ iterated regression", False, CONTEXT, hard=True, steps=2),
    Row("+ box voting", False, CONTEXT, hard=True, steps=2, voting=True),
]


class ImageRows:
    """One image's proposals with their features (float16, :data:`CONTEXT` columns), Fast R-CNN labels, the
    matched objects' boxes (zeros where none) and which rows are squares (or ground truth)."""

    def __init__(self, pyramid: PyramidMaps, img: VocImage, squares: torch.Tensor, ratios: torch.Tensor) -> None:
        gt, cls, difficult = object_arrays(img)
        self.boxes = with_ground_truth(ratios, gt, difficult).float()
        self.labels, matched = detection_labels(self.boxes, gt, cls, difficult, positive_iou=FG_IOU,
                                                negative_iou=FG_IOU, bg_low=BG_LOW)
        self.targets = gt[matched.clamp(min=0)].float() if len(gt) else torch.zeros(len(self.boxes), 4)
        key = {tuple(b) for b in squares.tolist()}
        self.square = torch.tensor([tuple(b) in key for b in ratios.tolist()]
                                   + [True] * (len(self.boxes) - len(ratios)))
        with torch.inference_mode():
            self.features = box_features(pyramid, self.boxes, ROI).half()


def train_softmax(x: torch.Tensor, y: torch.Tensor, weight_decay: float, epochs: int = 15) -> torch.nn.Linear:
    """A linear softmax over 21 outputs on standardised rows, AdamW, minibatches of 4,096; the standardisation is
    folded into the returned layer."""
    xf = x.float()
    mean, std = xf.mean(0), xf.std(0).clamp(min=1e-3)
    z = (xf - mean) / std
    layer = torch.nn.Linear(x.shape[1], len(VOC_CLASSES) + 1)
    opt = torch.optim.AdamW(layer.parameters(), lr=2e-3, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(z), generator=g).split(4096):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(layer(z[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        folded = torch.nn.Linear(x.shape[1], len(VOC_CLASSES) + 1)
        folded.weight.copy_(layer.weight / std)
        folded.bias.copy_(layer.bias - (layer.weight * (mean / std)).sum(1))
    return folded


class LogOdds:
    """A softmax as the scorer of :func:`mine_hard_negatives`: hardness log P(object) - log P(background)."""

    def __init__(self, layer: torch.nn.Linear) -> None:
        self.layer = layer

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.layer(x.float())
        return torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]


class Scored:
    """A trained row: its softmax, its box regression (or ``None``) and its :class:`Row`."""

    def __init__(self, row: Row, layer: torch.nn.Linear, regression: BoxRegression | None) -> None:
        self.row, self.layer, self.regression = row, layer, regression

    def probs(self, feats: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(self.layer(feats[:, : self.row.dim].float()), dim=1)[:, 1:]

    def detections(self, pyramid: PyramidMaps, rows: ImageRows, size: tuple[int, int]) -> list[Detection]:
        """The image's detections under this row's rule (module docstring)."""
        pick = rows.square if self.row.squares else torch.ones(len(rows.boxes), dtype=torch.bool)
        boxes, feats = rows.boxes[pick], rows.features[pick]
        probs = self.probs(feats)
        cand, cls = candidates(probs)
        scores = probs[cand, cls]
        boxes, feats = boxes[cand], feats[cand]
        h, w = size
        limit = torch.tensor([w, h, w, h], dtype=torch.float32)
        for _ in range(self.row.steps):
            assert self.regression is not None
            moved = decode_boxes(boxes, self.regression.deltas(feats[:, : self.row.dim].float(), cls))
            boxes = torch.minimum(moved.clamp(min=0), limit)
            ok = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
            boxes, cls, scores = boxes[ok], cls[ok], scores[ok]
            with torch.inference_mode():
                feats = box_features(pyramid, boxes, ROI)
            scores = (scores + self.probs(feats)[torch.arange(len(cls)), cls]) / 2
        keep = batched_nms(boxes.double(), scores.double(), cls, NMS)[:PER_IMAGE]
        out = []
        for i in keep.tolist():
            box = boxes[i]
            if self.row.voting:
                same = (cls == cls[i]).nonzero()[:, 0]
                near = same[pairwise_iou(box[None].double(), boxes[same].double())[0] >= VOTE_IOU]
                wts = scores[near][:, None]
                box = (boxes[near] * wts).sum(0) / wts.sum()
            out.append(Detection(VOC_CLASSES[int(cls[i])], float(scores[i]), tuple(float(v) for v in box)))
        return out


def candidates(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, classes)`` of the proposals with a class probability >= :data:`SCORE_MIN`, at most
    :data:`CANDIDATES_PER_CLASS` per class (the best)."""
    rows, cls = [], []
    for c in range(probs.shape[1]):
        r = (probs[:, c] >= SCORE_MIN).nonzero()[:, 0]
        r = r[probs[r, c].argsort(descending=True)[:CANDIDATES_PER_CLASS]]
        rows.append(r)
        cls.append(torch.full((len(r),), c, dtype=torch.int64))
    return torch.cat(rows), torch.cat(cls)


def sampled(labels: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Every positive and up to :data:`BG_PER_FG` background rows per positive (at least 16)."""
    fg = torch.nonzero(labels > 0).flatten()
    bg = torch.nonzero(labels == 0).flatten().numpy()
    n_bg = min(len(bg), max(16, BG_PER_FG * len(fg)))
    return torch.cat([fg, torch.from_numpy(rng.choice(bg, n_bg, replace=False)).long()])


def subset(r: ImageRows, squares: bool) -> torch.Tensor:
    """The rows of ``r`` a row of the table trains and scores on: the squares (and ground truth) or all."""
    return r.square if squares else torch.ones(len(r.boxes), dtype=torch.bool)


def fit_softmax(row: Row, train: Sequence[ImageRows], weight_decay: float) -> torch.nn.Linear:
    """``row``'s softmax on ``train``: mined negatives when ``row.hard``, else a random sample."""
    images = [(r.features[subset(r, row.squares)][:, : row.dim], r.labels[subset(r, row.squares)]) for r in train]
    if not row.hard:
        rng = np.random.default_rng(0)
        picks = [sampled(y, rng) for _, y in images]
        return train_softmax(torch.cat([x[p] for (x, _), p in zip(images, picks)]),
                             torch.cat([y[p] for (_, y), p in zip(images, picks)]), weight_decay)
    scorer, log = mine_hard_negatives(images, lambda x, y: LogOdds(train_softmax(x, y, weight_decay)), passes=2,
                                      initial_negatives=BG_PER_FG * sum(int((y > 0).sum()) for _, y in images),
                                      max_negatives=200_000)
    print(json.dumps({"row": row.name, "weight_decay": weight_decay, "mining": {
        "positives": log.positives, "negatives": log.negatives, "added": log.added, "dropped": log.dropped}}),
        flush=True)
    return scorer.layer


def regression_rows(train: Sequence[ImageRows], row: Row) -> RegressionRows:
    """The foreground rows of ``train`` with R-CNN deltas onto their objects, on ``row``'s features."""
    fg = [(r.labels > 0) & subset(r, row.squares) for r in train]
    return RegressionRows(torch.cat([r.features[m][:, : row.dim] for r, m in zip(train, fg)]),
                          torch.cat([r.boxes[m] for r, m in zip(train, fg)]),
                          torch.cat([encode_boxes(r.boxes[m], r.targets[m]) for r, m in zip(train, fg)]),
                          torch.cat([r.labels[m] - 1 for r, m in zip(train, fg)]))


def regression_error(reg: BoxRegression, rows: RegressionRows) -> float:
    """Mean squared error of ``reg``'s deltas on ``rows``."""
    return float(((reg.deltas(rows.features.float(), rows.labels).double() - rows.targets) ** 2).mean())


def truth_of(img: VocImage) -> GroundTruth:
    return GroundTruth(np.array([o.box for o in img.objects]).reshape(-1, 4), [o.name for o in img.objects],
                       np.array([o.difficult for o in img.objects]))


def evaluate(models: Sequence[Scored], images: Sequence[VocImage], pyramids: Callable[[VocImage], PyramidMaps],
             rows_of: Callable[[VocImage, PyramidMaps], ImageRows]) -> list[tuple[np.ndarray, float, float]]:
    """Per model ``(per-class area AP, mAP area, mAP 11-point)`` on ``images``."""
    dets: list[list[list[Detection]]] = [[] for _ in models]
    for img in images:
        pyramid = pyramids(img)
        rows = rows_of(img, pyramid)
        for d, m in zip(dets, models):
            d.append(m.detections(pyramid, rows, (img.height, img.width)))
    truth = [truth_of(img) for img in images]
    out = []
    for d in dets:
        per_class, mean = detection_ap(d, truth, VOC_CLASSES)
        _, mean07 = detection_ap(d, truth, VOC_CLASSES, method="voc2007")
        out.append((per_class, mean, mean07))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voc", default=None)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--images", type=int, default=None, help="first N images of each split (default: all)")
    ap.add_argument("--rows", nargs="*", type=int, default=None, help="indices into the lever table (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    root = experiment_voc_root(args.voc)
    backbone = get_backbone("efficientnet_lite0")
    train_imgs, val_imgs = (load_split(root, s)[: args.images] for s in ("train", "val"))
    table = [ROWS[i] for i in args.rows] if args.rows is not None else ROWS
    t0 = time.perf_counter()

    def pyramid_of(img: VocImage) -> PyramidMaps:
        return cached_maps(backbone, img, args.cache)

    def rows_of(img: VocImage, pyramid: PyramidMaps) -> ImageRows:
        return ImageRows(pyramid, img, dense_proposals(img.width, img.height, backbone, SQUARES),
                         dense_proposals(img.width, img.height, backbone, RATIOS))

    def sampled_rows(img: VocImage) -> ImageRows:
        """An image's rows cut to the positives and a generous background sample, so that train fits memory."""
        r = rows_of(img, pyramid_of(img))
        fg = (r.labels > 0).nonzero()[:, 0]
        bg = (r.labels == 0).nonzero()[:, 0]
        bg = bg[torch.randperm(len(bg), generator=torch.Generator().manual_seed(len(bg)))[: max(400, 20 * len(fg))]]
        keep = torch.cat([fg, bg])
        for name in ("boxes", "labels", "targets", "square", "features"):
            setattr(r, name, getattr(r, name)[keep])
        return r

    train_rows = [sampled_rows(img) for img in train_imgs]
    t_rows = time.perf_counter() - t0
    print(json.dumps({"seconds_train_rows": round(t_rows, 1)}), flush=True)
    # Regularisation, chosen on a held-out quarter of train: the weight decay of each softmax by the quarter's
    # mAP, the ridge of each regression by its squared error on the quarter's foreground rows.
    n_tune = len(train_imgs) // 4
    tune_imgs, tune_rows, fit_rows = train_imgs[:n_tune], train_rows[:n_tune], train_rows[n_tune:]
    keys = list(dict.fromkeys((r.squares, r.dim, r.hard) for r in table))
    decay, ridge = {}, {}
    for key in keys:
        row = Row(f"tune {key}", *key)
        models = [Scored(row, fit_softmax(row, fit_rows, wd), None) for wd in WEIGHT_DECAYS]
        maps = [res[1] for res in evaluate(models, tune_imgs, pyramid_of, rows_of)]
        decay[key] = WEIGHT_DECAYS[int(np.argmax(maps))]
        print(json.dumps({"tune": key, "weight_decays": WEIGHT_DECAYS, "map": [round(100 * m, 2) for m in maps]}),
              flush=True)
    for row in table:
        if row.steps and row.dim not in ridge:
            fit, held = regression_rows(fit_rows, row), regression_rows(tune_rows, row)
            errors = [regression_error(fit_box_regression(fit, len(VOC_CLASSES), rg), held) for rg in RIDGES]
            ridge[row.dim] = RIDGES[int(np.argmin(errors))]
            print(json.dumps({"tune ridge": row.dim, "ridges": RIDGES, "mse": errors}), flush=True)
    layers = {key: fit_softmax(Row(f"final {key}", *key), train_rows, decay[key]) for key in keys}
    models = [Scored(row, layers[(row.squares, row.dim, row.hard)],
                     fit_box_regression(regression_rows(train_rows, row), len(VOC_CLASSES), ridge[row.dim])
                     if row.steps else None) for row in table]
    chosen = {row.name: (decay[(row.squares, row.dim, row.hard)], ridge.get(row.dim)) for row in table}
    results = evaluate(models, val_imgs, pyramid_of, rows_of)
    print(format_ap_table(VOC_CLASSES, {r.name: res[0] for r, res in zip(table, results)}))
    for row, (_, mean, mean07) in zip(table, results):
        print(json.dumps({"row": row.name, "weight_decay_ridge": chosen[row.name], "map_voc2010": round(100 * mean, 2),
                          "map_voc2007": round(100 * mean07, 2)}))
    print(json.dumps({"train_images": len(train_imgs), "val_images": len(val_imgs),
                      "seconds_train_rows": round(t_rows, 1), "seconds_total": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
