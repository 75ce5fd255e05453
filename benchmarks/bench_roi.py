"""ROI-pooled box features (:mod:`midlevel_fast.features.roi`) on one 500×375 VOC image, after the trunk maps exist,
against ``score_image`` on the same image in the same run: what detection on proposals adds to scoring.

The boxes are the candidate set of docs/boxes.md's recall table, second row: the dense windows of the paper's 9
scales and, for each, the 1:2 and 2:1 rectangles of the same centre and area, clipped to the image (1,932 boxes
on a 500×375 image). Run: ``pytest benchmarks/bench_roi.py --benchmark-only`` (about a minute on 2 cores).
"""
from __future__ import annotations

import pytest
import torch

from midlevel_fast import load_model, score_image
from midlevel_fast.features.dense import dense_windows
from midlevel_fast.features.roi import RoiConfig, box_features, image_maps

CONFIGS = {"mid-level": RoiConfig(), "mid-level + layout + context 1.5": RoiConfig(layout=True, context=1.5)}


def proposals(windows: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``windows`` and their 1:2 and 2:1 rectangles of the same centre and area, clipped to the image."""
    centre, side = (windows[:, :2] + windows[:, 2:]) / 2, windows[:, 2:] - windows[:, :2]
    sets = [windows]
    for aspect in (0.5, 2.0):
        half = side * torch.tensor([aspect ** 0.5, aspect ** -0.5]) / 2
        sets.append(torch.cat([centre - half, centre + half], dim=1))
    return torch.minimum(torch.cat(sets).clamp(min=0), torch.tensor([width, height] * 2, dtype=windows.dtype))


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_score_image(benchmark, voc_image, model):
    benchmark.group = "roi features, 500x375"
    benchmark.pedantic(score_image, args=(voc_image[1], model), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(baseline=True)


def test_image_maps(benchmark, voc_image, model):
    benchmark.group = "roi features, 500x375"
    benchmark.pedantic(image_maps, args=(model.backbone, voc_image[1]), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("config", CONFIGS)
def test_box_features(benchmark, voc_image, model, config):
    image = voc_image[1]
    boxes = proposals(dense_windows(model.backbone, image).boxes, image.shape[1], image.shape[0])
    maps = image_maps(model.backbone, image)
    benchmark.group = "roi features, 500x375"
    features = benchmark.pedantic(box_features, args=(maps, boxes, CONFIGS[config]), rounds=5, warmup_rounds=1)
    assert features.shape[0] == len(boxes)
    benchmark.extra_info.update(boxes=len(boxes))
