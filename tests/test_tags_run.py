"""``midlevel-fast train --supervision image``: from ImageFolder, list and VOC data to an ordinary head file."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from midlevel_fast.cli import main
from midlevel_fast.model.head import load_head
from midlevel_fast.model.classifier import load_model
from midlevel_fast.scoring.score import score_image
from midlevel_fast.datasets.tags import imagefolder_tags
from midlevel_fast.recipes.tags_run import train_tagged_head
from midlevel_fast.training.train import TrainConfig
from tests.helpers import make_voc, obj


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An ImageFolder of 56x44 photos-to-be: reddish "warm" and bluish "cold" images, 3 train and 1 val each."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 1)):
        for cls, colour in (("warm", (200, 60, 30)), ("cold", (30, 60, 200))):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(colour, 40, (44, 56, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def test_cli_trains_from_an_imagefolder_and_the_head_scores_images(folder, tmp_path, capsys):
    head_file = tmp_path / "weak.safetensors"
    args = ["train", "--data", str(folder), "--format", "imagefolder", "--supervision", "image", "--pooling",
            "power-mean", "--epochs", "2", "--cache", str(folder / "cache"), "--out", str(head_file)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "6 training images" in out and "images' features computed in" in out
    assert "on 6 images' labels (power-mean pooling)" in out and "val voc2010" in out
    _, info = load_head(head_file)
    assert info.class_names == ["cold", "warm"] and info.box_regression is None
    assert info.extra["supervision"] == "image" and info.extra["train"]["pooling"] == "power-mean"
    assert info.extra["data"] == "imagefolder" and info.extra["splits"] == ["train"]
    res = score_image(folder / "val" / "warm" / "0.png", load_model(head_file), return_maps=True)
    assert res.class_names == ["cold", "warm"] and set(res.points) == {"cold", "warm"}
    # A second run reads the cache: nothing is computed.
    assert main(args) == 0 and "(all cached)" in capsys.readouterr().out


def test_cli_trains_from_a_list_and_from_voc_labels(folder, tmp_path, capsys):
    lines = [f"{p},{p.parent.name};bright" for p in sorted((folder / "train").glob("*/*.png"))]
    (tmp_path / "train.csv").write_text("path,labels\n" + "\n".join(lines) + "\n")
    # The ImageFolder test's cache (when it ran first): the same images, found by content.
    common = ["--supervision", "image", "--epochs", "1", "--val-split", "", "--cache", str(folder / "cache")]
    assert main(["train", "--data", str(tmp_path), "--format", "list", "--split", "train.csv", *common,
                 "--out", str(tmp_path / "list.safetensors")]) == 0
    assert load_head(tmp_path / "list.safetensors")[1].class_names == ["bright", "cold", "warm"]
    voc = make_voc(tmp_path / "voc", obj("cat", (4, 3, 36, 28)))
    assert main(["train", "--voc", str(voc), "--split", "train", *common, "--out", str(tmp_path / "voc.st")]) == 0
    assert "1 training images" in capsys.readouterr().out
    assert load_head(tmp_path / "voc.st")[1].extra["data"] == "voc"


@pytest.mark.parametrize("args, message", [
    (["--supervision", "image"], "give the data set as --voc VOC_ROOT or as --data PATH"),
    (["--data", "D", "--voc", "V"], "give the data set as --voc VOC_ROOT or as --data PATH"),
    (["--data", "D"], "--data/--format give image labels: train on them with --supervision image"),
    (["--data", "D", "--supervision", "image", "--mode", "dense", "batched"], "pools the windows of one --mode"),
])
def test_cli_refuses_inconsistent_options(args, message, tmp_path, capsys):
    assert main(["train", *args, "--out", str(tmp_path / "h.safetensors")]) == 2
    assert message in capsys.readouterr().err


def test_cli_reports_a_bad_data_set_without_a_traceback(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--supervision", "image", "--out", str(tmp_path / "h.st")]) != 0
    err = capsys.readouterr().err
    assert "train: no such folder" in err and "Traceback" not in err


def test_train_tagged_head_needs_image_supervision(folder, tmp_path):
    images, classes = imagefolder_tags(folder, "train")
    with pytest.raises(ValueError, match="config.supervision must be 'image'"):
        train_tagged_head(images, classes, tmp_path / "h.st", config=TrainConfig())
