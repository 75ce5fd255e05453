"""ScoreResult's views: the JSON record (``to_dict``, what ``score --json`` and ``score-dir`` write) and the
torchvision-style detection tensors (``detection_tensors``)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from midlevel_fast.scoring.detections import Detection
from midlevel_fast.scoring.score import score_image
from tests.distributed_worker import tiny_model
from tests.test_overlay import made_result

DETECTIONS = [Detection("cat", 0.875, (1.0, 2.25, 30.0, 40.0)), Detection("bus", 0.5, (10.0, 12.0, 70.125, 59.0)),
              Detection("cat", 0.25, (40.0, 0.0, 80.0, 30.0))]


def test_record_has_the_best_classes_and_the_detections():
    record = made_result(presence=[0.97, 0.6, 0.1], detections=DETECTIONS[:1]).to_dict()
    assert list(record) == ["width", "height", "mode", "k", "patches", "classes", "detections", "seconds"]
    assert (record["width"], record["height"], record["mode"], record["k"], record["patches"],
            record["seconds"]) == (80, 60, "dense", 5.0, 1, 0.25)
    assert [c["class"] for c in record["classes"]] == ["dog", "cat", "bus"]
    assert record["classes"][1] == {"class": "cat", "score": pytest.approx(3.9e-3), "presence": pytest.approx(0.97),
                                    "point": [60.5, 15.5]}
    assert record["detections"] == [{"class": "cat", "score": 0.875, "box": [1.0, 2.25, 30.0, 40.0]}]
    assert json.loads(json.dumps(record)) == record  # plain Python types
    bare = made_result(points={}).to_dict(top=2)
    assert [c["class"] for c in bare["classes"]] == ["dog", "cat"]
    assert all(c["presence"] is None and c["point"] is None for c in bare["classes"])


def test_record_rounds_points_boxes_and_seconds_and_orders_ties_by_class():
    res = dataclasses.replace(made_result(points={"dog": (20.123456, 30.987654)}, detections=[
        Detection("dog", 0.5, (1.23456, 2.0, 30.0, 40.98765))]), seconds=0.123456,
        scores=torch.tensor([0.5, 0.5, 0.7]))
    record = res.to_dict()
    assert [c["class"] for c in record["classes"]] == ["bus", "cat", "dog"]  # cat and dog tie: in class order
    assert record["classes"][2]["point"] == [20.12, 30.99] and record["seconds"] == 0.1235
    assert record["detections"][0]["box"] == [1.23, 2.0, 30.0, 40.99]


def test_detection_tensors_are_the_detections():
    res = made_result(detections=DETECTIONS)
    got = res.detection_tensors()
    assert set(got) == {"boxes", "labels", "scores"}
    assert (got["boxes"].dtype, got["labels"].dtype, got["scores"].dtype) == (torch.float32, torch.int64,
                                                                             torch.float32)
    assert got["boxes"].tolist() == [list(d.box) for d in DETECTIONS]
    assert [res.class_names[i] for i in got["labels"].tolist()] == [d.label for d in DETECTIONS]
    assert got["scores"].tolist() == [d.score for d in DETECTIONS]
    empty = made_result().detection_tensors()
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == empty["scores"].shape == (0,)
    assert (empty["boxes"].dtype, empty["labels"].dtype) == (torch.float32, torch.int64)
    # A name two classes share (ImageNet's two "crane"): the first one's index.
    twice = dataclasses.replace(res, class_names=["cat", "dog", "cat"], detections=DETECTIONS[:1])
    assert twice.detection_tensors()["labels"].tolist() == [0]


def test_detection_tensors_of_a_scored_image_match_its_detections():
    image = (torch.rand(48, 64, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    res = score_image(image, tiny_model(), detection_threshold=0.0, precision="fp32")
    got = res.detection_tensors()
    assert len(res.detections) > 0 and len(got["boxes"]) == len(res.detections)
    for d, box, label, score in zip(res.detections, got["boxes"], got["labels"], got["scores"]):
        assert (tuple(box.tolist()), res.class_names[int(label)], float(score)) == (d.box, d.label, d.score)


def test_mean_average_precision_takes_the_detection_tensors():
    pytest.importorskip("torchvision", reason="torchmetrics' MeanAveragePrecision needs torchvision, which is not a "
                                              "test dependency")
    from torchmetrics.detection.mean_ap import MeanAveragePrecision

    preds = made_result(detections=DETECTIONS).detection_tensors()
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True)
    # The truth: the first two detections' objects; the third (a cat where none is) is a false positive ranked last.
    metric.update([preds], [{"boxes": preds["boxes"][:2], "labels": preds["labels"][:2]}])
    result = metric.compute()
    assert sorted(result["classes"].tolist()) == [0, 2]  # cat, bus
    assert float(result["map_50"]) == pytest.approx(1.0)
