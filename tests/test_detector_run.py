"""The ``detector`` command and its recipe (recipes/detector_run.py) on a one-image VOC tree, and the trunk maps
cache it reads (cache/trunk_maps.py): maps stored once, read back equal to float16 rounding, a damaged file
computed again, bad settings and splits without objects refused with a message."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from midlevel_fast.cache.trunk_maps import TrunkMapsCache
from midlevel_fast.cli import main
from midlevel_fast.features.roi import image_maps
from midlevel_fast.io.image_io import load_image
from midlevel_fast.model.classifier import load_model
from midlevel_fast.model.head import load_head
from midlevel_fast.recipes.voc_run import train_voc_head
from midlevel_fast.scoring.score import score_image
from midlevel_fast.training.train import TrainConfig
from tests.helpers import make_voc, obj, skimage_photo

SCALES = (1.0, 2.0)


def test_maps_are_cached_once_and_a_damaged_file_is_computed_again(tmp_path, lite0):
    photo = skimage_photo("chelsea")
    cache = TrunkMapsCache(lite0, "efficientnet_lite0", tmp_path, precision="fp32", scales=SCALES)
    first = cache.maps("cat", photo)
    assert cache.path("cat").is_file()
    want = image_maps(lite0, photo, SCALES)
    again = cache.maps("cat", None)  # read from the file: the image is not decoded again
    assert again.plan == want.plan == first.plan
    for a, b in zip(again.maps, want.maps):
        torch.testing.assert_close(a, b.half().float())
    cache.path("cat").write_bytes(b"truncated")
    assert len(cache.maps("cat", photo).maps) == len(want.maps)
    other = TrunkMapsCache(lite0, "efficientnet_lite0", tmp_path, precision="fp32", scales=(1.0,))
    assert other.root != cache.root, "different settings never share a directory"


@pytest.fixture(scope="module")
def cat_head(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detector_run")
    root = make_voc(tmp / "voc", obj("cat", (4, 3, 36, 28)))
    head = tmp / "h.safetensors"
    train_voc_head(root, head, val_split=None, config=TrainConfig(hidden=16, max_epochs=1),
                   cache_base=tmp / "cache", log=None)
    return root, head, tmp


def test_the_detector_command_writes_a_head_whose_detections_are_the_detectors(cat_head, tmp_path, capsys):
    root, head, tmp = cat_head
    out = tmp_path / "det.safetensors"
    assert main(["detector", "--voc", str(root), "--head", str(head), "--out", str(out), "--passes", "1",
                 "--cache", str(tmp / "cache")]) == 0
    printed = capsys.readouterr().out
    assert "ROI detector trained on" in printed and f"head written to {out}" in printed
    _, info = load_head(out)
    det = info.detector
    assert det is not None and det.description["splits"] == ["train"] and det.description["images"] == 1
    assert det.regression is not None and det.steps == 2
    model = load_model(out)
    image = load_image(root / "JPEGImages" / "img.jpg")
    result = score_image(image, model, mode="dense", detection_threshold=0.0, precision="fp32")
    plain = score_image(image, load_model(head), mode="dense", detection_threshold=0.0, precision="fp32")
    np.testing.assert_allclose(result.scores, plain.scores, rtol=1e-5, atol=1e-6)
    assert result.detections != plain.detections


@pytest.mark.parametrize("argv, match", [
    (["--passes", "-1"], "--passes and --steps must be >= 0"),
    (["--ridge", "0"], "--ridge must be > 0"),
    (["--weight-decay", "-1"], "--weight-decay must be > 0"),
])
def test_the_detector_command_refuses_bad_settings(cat_head, tmp_path, capsys, argv, match):
    root, head, _ = cat_head
    assert main(["detector", "--voc", str(root), "--head", str(head), "--out", str(tmp_path / "o.safetensors"),
                 *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_the_detector_command_refuses_splits_without_objects(cat_head, tmp_path, capsys):
    _, head, tmp = cat_head
    empty = make_voc(tmp_path / "empty")
    assert main(["detector", "--voc", str(empty), "--head", str(head), "--out", str(tmp_path / "o.safetensors"),
                 "--cache", str(tmp / "cache")]) == 2
    err = capsys.readouterr().err
    assert "hold no object of the head's classes" in err and "Traceback" not in err
    assert not (tmp_path / "o.safetensors").exists()
