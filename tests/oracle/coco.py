"""pycocotools configured as close to PASCAL VOC's detection rules as it goes: a second oracle for
:func:`midlevel_fast.metrics.detection_ap.detection_ap`, shared by the tests
(``tests/test_library_oracles_metrics.py``, which states where the two definitions differ) and
``experiments/detection_oracles.py`` (the real val detections). Test-only: pycocotools is a ``[test]`` dependency.
Like every oracle it imports nothing of the package: a detection is anything with ``box``, ``label`` and ``score``
(the package's ``Detection``), a ground truth anything with ``boxes``, ``labels`` and ``difficult`` (its
``GroundTruth``)."""
from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval



def coco_evaluation(detections: Sequence[Sequence[Any]], truth: Sequence[Any],
                    classes: Sequence[str]) -> COCOeval:
    """COCOeval of ``detections[i]`` against ``truth[i]``, evaluated and accumulated, configured as close to VOC
    as it goes: IoU 0.5 only, one area range holding every box, ``maxDets`` beyond the number of detections, and
    VOC's difficult objects given as ``iscrowd`` (pycocotools overwrites an ``ignore`` field with ``iscrowd``, so
    that is the only way to have them ignored; a crowd box's IoU is then ``intersection / area(detection)``).
    Category ``k`` is ``classes[k]``, image ``i`` is ``truth[i]``; boxes ``(x0, y0, x1, y1)`` become
    ``[x0, y0, x1 − x0, y1 − y0]``."""
    images, annotations, results = [], [], []
    for i, (dets, gt) in enumerate(zip(detections, truth)):
        images.append({"id": i, "width": 1000, "height": 1000})
        for box, label, difficult in zip(np.asarray(gt.boxes).reshape(-1, 4), gt.labels, gt.difficult):
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": classes.index(label),
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                "iscrowd": int(difficult)})
        for d in dets:
            x0, y0, x1, y1 = (float(v) for v in d.box)
            results.append({"image_id": i, "category_id": classes.index(d.label), "score": float(d.score),
                            "bbox": [x0, y0, x1 - x0, y1 - y0]})
    gt_api = COCO()
    gt_api.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c, "name": n} for c, n in enumerate(classes)]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt_api.createIndex()
        dt_api = gt_api.loadRes(results) if results else COCO()
        evaluator = COCOeval(gt_api, dt_api, "bbox")
        evaluator.params.iouThrs = np.array([0.5])
        evaluator.params.areaRng = [[0.0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.params.maxDets = [len(results) + 1]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def coco_ap(evaluator: COCOeval) -> np.ndarray:
    """Per-category AP of an accumulated :func:`coco_evaluation`: the mean over COCO's 101 recall points; NaN
    for a category without a non-crowd GT box."""
    precision = evaluator.eval["precision"][0, :, :, 0, 0]  # (recall points, categories)
    return np.where(precision.min(axis=0) < 0, np.nan, precision.mean(axis=0))


def coco_ranked_hits(evaluator: COCOeval, category: int) -> tuple[np.ndarray, np.ndarray, int]:
    """COCO's own labelling of category ``category``'s detections: ``(scores, hits, n_pos)``, the detections it
    does not ignore in its ranking order (decreasing score, a stable sort over the images in order, as
    ``accumulate`` does), whether each is matched, and the number of non-crowd GT boxes."""
    n_images = len(evaluator.params.imgIds)
    scores, hits, n_pos = [], [], 0
    for e in evaluator.evalImgs[category * n_images:(category + 1) * n_images]:  # one area range
        if e is None:
            continue
        keep = ~np.asarray(e["dtIgnore"][0], dtype=bool)
        scores.append(np.asarray(e["dtScores"], dtype=np.float64)[keep])
        hits.append(np.asarray(e["dtMatches"][0])[keep] > 0)
        n_pos += int((~np.asarray(e["gtIgnore"], dtype=bool)).sum())
    s = np.concatenate(scores) if scores else np.zeros(0)
    h = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    order = np.argsort(-s, kind="mergesort")
    return s[order], h[order], n_pos
