"""Presence probabilities (:mod:`midlevel_fast.model.presence`): Platt and isotonic by hand, the floor, the
calibration's checks, its round trip through the head file, and ``ScoreResult.presence``/``present()``."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from midlevel_fast import AdaptationHead, HeadInfo, load_head, save_head
from midlevel_fast.model.classifier import load_model
from midlevel_fast.model.presence import Calibration, presence_for, presence_probabilities
from midlevel_fast.scoring.result import ScoreResult
from midlevel_fast.scoring.score import score_image
from midlevel_fast.training.calibration_fit import fit_calibration
from tests.helpers import random_image

CLASSES = ["cat", "dog", "bus"]


def calibration(method: str = "platt", k: float = 5.0) -> Calibration:
    """A calibration of three classes fitted on six images."""
    scores = torch.tensor([[1e-9, 0.2, 1e-3], [0.3, 1e-6, 0.1], [0.6, 0.5, 1e-5],
                           [1e-4, 1e-3, 0.4], [0.05, 0.7, 0.0], [0.9, 1e-8, 0.02]], dtype=torch.float64)
    positives = scores > 0.04
    positives[0, 1] = False
    ignore = torch.zeros_like(positives)
    ignore[3, 2] = True
    return fit_calibration(scores, positives, ignore, method, k, CLASSES, {"source": "test", "splits": ["val"]})


def test_platt_by_hand():
    scores = torch.zeros(1, 2, dtype=torch.float64)
    cal = Calibration("platt", torch.tensor([[2.0, 1.0], [0.0, -1.0]], dtype=torch.float64), 5.0, scores,
                      torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, 2, dtype=torch.bool))
    got = presence_probabilities(torch.tensor([math.exp(-1.0), 0.3]), cal)
    # sigmoid(2·(−1) + 1) and sigmoid(0·log 0.3 − 1).
    torch.testing.assert_close(got, torch.tensor([1 / (1 + math.e), 1 / (1 + math.e)]))
    assert got.dtype == torch.float32


def test_isotonic_by_hand_with_padding():
    # Class 0: knots at log score -4 (0.1) and -2 (0.5), padded by repeating the last; class 1: three knots.
    knots = torch.tensor([[[-4.0, 0.1], [-2.0, 0.5], [-2.0, 0.5]],
                          [[-3.0, 0.0], [-1.0, 0.4], [0.0, 1.0]]], dtype=torch.float64)
    cal = Calibration("isotonic", knots, 5.0, torch.zeros(1, 2, dtype=torch.float64),
                      torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, 2, dtype=torch.bool))
    scores = torch.tensor([[math.exp(-5.0), math.exp(-4.0)], [math.exp(-3.0), math.exp(-2.0)],
                           [math.exp(-1.0), math.exp(-0.5)], [1.0, 1.0]])
    got = presence_probabilities(scores, cal)
    want = torch.tensor([[0.1, 0.0], [0.3, 0.2], [0.5, 0.7], [0.5, 1.0]])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_calibration_checks_its_shapes():
    good = calibration()
    with pytest.raises(ValueError, match="method must be one of"):
        dataclasses.replace(good, method="beta")
    with pytest.raises(ValueError, match=r"parameters must be \(C, 2\) with C = 3"):
        dataclasses.replace(good, parameters=torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(C, L >= 2, 2\)"):
        dataclasses.replace(good, method="isotonic", parameters=torch.zeros(3, 1, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="must have the shape of scores"):
        dataclasses.replace(good, ignore=torch.zeros(6, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="scores have 2 classes, the calibration 3"):
        presence_probabilities(torch.zeros(2), good)


def test_presence_only_for_the_calibrations_k():
    cal = calibration(k=5.0)
    assert presence_for(torch.full((3,), 0.1), None, 5.0) is None
    assert presence_for(torch.full((3,), 0.1), cal, 2.0) is None
    assert presence_for(torch.full((3,), 0.1), cal, 5).shape == (3,)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_round_trips_through_the_head_file(tmp_path, method):
    head = AdaptationHead(8, 4, layers=1)
    cal = calibration(method)
    info = HeadInfo(backbone="alexnet", class_names=CLASSES, layers=1, hidden=16, calibration=cal)
    save_head(tmp_path / "h.safetensors", head, info, dtype=torch.float16)
    loaded, info2 = load_head(tmp_path / "h.safetensors")
    assert info2 == info and info2.calibration == cal
    assert info2.calibration.scores.dtype == torch.float64 and info2.calibration.positives.dtype == torch.bool
    assert loaded.net[0].weight.dtype == torch.float32
    scores = torch.tensor([0.01, 0.3, 1e-12])
    assert torch.equal(presence_probabilities(scores, info2.calibration), presence_probabilities(scores, cal))
    with pytest.raises(ValueError, match="calibration has 3 classes, the head 2"):
        save_head(tmp_path / "bad.safetensors", AdaptationHead(8, 3, layers=1),
                  dataclasses.replace(info, class_names=["a", "b"]))


def test_head_files_without_calibration_still_load(tmp_path):
    head = AdaptationHead(8, 4, layers=1)
    save_head(tmp_path / "h.safetensors", head, HeadInfo(backbone="alexnet", class_names=CLASSES, layers=1))
    assert load_head(tmp_path / "h.safetensors")[1].calibration is None


def test_a_broken_calibration_entry_is_reported(tmp_path):
    head = AdaptationHead(8, 4, layers=1)
    save_head(tmp_path / "h.safetensors", head, HeadInfo(backbone="alexnet", class_names=CLASSES, layers=1,
                                                         calibration=calibration()))
    tensors = {k: v.contiguous() for k, v in head.state_dict().items()}
    with safe_open(str(tmp_path / "h.safetensors"), framework="pt") as f:
        meta = f.metadata()
    save_file(tensors, tmp_path / "broken.safetensors", metadata=meta)  # the calibration's tensors are missing
    with pytest.raises(ValueError, match="broken.safetensors.*missing or inconsistent entries"):
        load_head(tmp_path / "broken.safetensors")


def result(presence: torch.Tensor | None) -> ScoreResult:
    return ScoreResult(["cat", "dog", "bus", "car"], torch.zeros(4), torch.zeros(0, 4), torch.zeros(0, 4),
                       torch.zeros(0, dtype=torch.int64), (10, 10), "dense", 5.0, presence=presence)


def test_present_is_best_first_above_the_threshold():
    res = result(torch.tensor([0.3, 0.9, 0.6, 0.6]))
    assert res.present() == [("dog", pytest.approx(0.9)), ("bus", pytest.approx(0.6)), ("car", pytest.approx(0.6))]
    assert [name for name, _ in res.present(0.0)] == ["dog", "bus", "car", "cat"]  # ties in class order
    assert res.present(0.95) == []
    assert [name for name, _ in res.present(0.6)] == ["dog", "bus", "car"]  # at the threshold counts
    with pytest.raises(ValueError, match="threshold must be in"):
        res.present(1.5)


def test_present_without_calibration_says_how_to_calibrate():
    with pytest.raises(ValueError, match=r"no calibration for k = 5.*midlevel-fast calibrate --voc ROOT --head HEAD"):
        result(None).present()


def test_score_image_fills_presence_from_the_heads_calibration():
    imagenet = load_model("imagenet")
    # One scale keeps it quick: presence depends on the scores only.
    lite0 = type(imagenet)(imagenet.backbone, imagenet.head, dataclasses.replace(imagenet.info, scales=[1.0])).eval()
    image = random_image(64, 80, 3)
    plain = score_image(image, lite0, mode="batched")
    assert plain.presence is None
    classes = lite0.class_names
    n = len(classes)
    scores = torch.rand(8, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cal = fit_calibration(scores, scores > 0.5, None, "platt", 5.0, classes)
    model = type(lite0)(lite0.backbone, lite0.head, dataclasses.replace(lite0.info, calibration=cal)).eval()
    res = score_image(image, model, mode="batched")
    assert res.presence.shape == (n,) and res.presence.dtype == torch.float32
    torch.testing.assert_close(res.presence, presence_probabilities(res.scores, cal))
    assert score_image(image, model, mode="batched", k=2.0).presence is None
