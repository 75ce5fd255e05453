"""``midlevel-fast calibrate`` (:mod:`midlevel_fast.cli.calibrate`): held out and cross-fit on a two-image VOC tree,
and its errors (message, exit status 2, no traceback)."""
from __future__ import annotations

import pytest

from midlevel_fast import AdaptationHead, HeadInfo, load_head, save_head
from midlevel_fast.cli import main
from midlevel_fast.datasets.voc import VOC_CLASSES
from tests.helpers import make_voc, obj


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A VOC tree of three images (train: the first two, val: a third, all: the three), their dense cache, and a
    head trained on train."""
    tmp = tmp_path_factory.mktemp("calibrate")
    root = tmp / "voc"
    make_voc(root, obj("cat", (4, 3, 36, 28)), image_id="img0", split="img0\nimg1\n")
    make_voc(root, obj("dog", (2, 2, 30, 25)), image_id="img1", split="img0\nimg1\n")
    make_voc(root, obj("cat", (6, 5, 30, 20)), image_id="img2", split="img0\nimg1\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("img2\n")
    (root / "ImageSets" / "Main" / "all.txt").write_text("img0\nimg1\nimg2\n")
    common = ["--voc", str(root), "--cache", str(tmp / "cache")]
    assert main(["cache", *common, "--split", "train", "val"]) == 0
    head = tmp / "head.safetensors"
    assert main(["train", *common, "--split", "train", "--val-split", "", "--epochs", "1", "--hidden", "16",
                 "--out", str(head)]) == 0
    return common, head, tmp


def test_cross_fit_writes_the_calibrated_head(trained, capsys):
    common, head, tmp = trained
    out = tmp / "cross.safetensors"
    capsys.readouterr()
    assert main(["calibrate", *common, "--head", str(head), "--cross-fit", "--folds", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == ("platt calibration fitted on the 2 images' out-of-fold scores of 2 folds "
                                             f"of train; head written to {out}")
    assert "warning: class 'aeroplane' has no positive in the fit data (2 images)" in captured.err
    cal = load_head(out)[1].calibration
    assert cal.method == "platt" and cal.scores.shape == (2, 20)
    assert {k: cal.description[k] for k in ("source", "splits", "folds", "images", "image_ids")} == {
        "source": "cross-fit", "splits": ["train"], "folds": 2, "images": 2, "image_ids": ["img0", "img1"]}


def test_calibrate_warnings_go_through_the_package_logger(trained, caplog):
    """A program calling main() receives the fallback notes in its logging (they were print()ed to stderr)."""
    common, head, tmp = trained
    with caplog.at_level("WARNING", logger="midlevel_fast"):
        assert main(["calibrate", *common, "--head", str(head), "--cross-fit", "--folds", "2", "-q",
                     "--out", str(tmp / "logged.safetensors")]) == 0
    assert any(r.name == "midlevel_fast.cli.calibrate" and r.levelname == "WARNING"
               and r.getMessage().startswith("class 'aeroplane' has no positive in the fit data (2 images)")
               for r in caplog.records)


def test_a_held_out_split_must_be_cached(trained, capsys):
    common, head, tmp = trained
    capsys.readouterr()
    assert main(["calibrate", *common, "--head", str(head), "--split", "val", "--out", str(tmp / "v.safetensors")]) == 0
    assert load_head(tmp / "v.safetensors")[1].calibration.description["source"] == "held-out"
    assert "fitted on the 1 images' scores of split 'val'" in capsys.readouterr().out
    empty = ["--voc", common[1], "--cache", str(tmp / "empty")]
    assert main(["calibrate", *empty, "--head", str(head), "--split", "val", "--out", str(tmp / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: feature cache ") and "lacks 1 of the 1 images of split 'val'" in err
    assert "midlevel-fast cache --voc" in err and "Traceback" not in err


def test_unseen_only_leaves_the_training_images_out(trained, capsys):
    common, head, tmp = trained
    capsys.readouterr()
    out = tmp / "u.safetensors"
    assert main(["calibrate", *common, "--head", str(head), "--split", "all", "--out", str(out)]) == 2
    assert "2 of the 3 images of split 'all' are in the head's training splits" in capsys.readouterr().err
    assert main(["calibrate", *common, "--head", str(head), "--split", "all", "--unseen-only", "--out", str(out)]) == 0
    assert "fitted on the 1 images' scores of split 'all' (2 seen images left out)" in capsys.readouterr().out
    cal = load_head(out)[1].calibration
    assert cal.description["image_ids"] == ["img2"] and cal.description["left_out_as_seen"] == 2


@pytest.mark.parametrize("args, message", [
    (["--split", "train"], "error: the head was trained on split 'train'"),
    (["--cross-fit", "--folds", "1"], "error: folds must be >= 2, got 1"),
    (["--cross-fit", "--folds", "3"], "error: folds (3) cannot exceed the number of images (2)"),
])
def test_errors_name_the_problem(trained, capsys, args, message):
    common, head, tmp = trained
    capsys.readouterr()
    assert main(["calibrate", *common, "--head", str(head), *args, "--out", str(tmp / "e.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err
    assert not (tmp / "e.safetensors").exists()


def test_cross_fit_needs_training_metadata(tmp_path, capsys):
    bare = tmp_path / "bare.safetensors"
    save_head(bare, AdaptationHead(1280, 21, layers=1),
              HeadInfo(backbone="efficientnet_lite0", class_names=list(VOC_CLASSES), layers=1))
    args = ["calibrate", "--voc", str(tmp_path), "--head", str(bare), "--cross-fit", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the head has no training metadata (splits, mode, train missing")
    assert "--split instead" in err
    assert main(["calibrate", "--voc", str(tmp_path), "--head", str(tmp_path / "none.safetensors"), "--split", "val",
                 "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: head file")


def test_split_or_cross_fit_is_required(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["calibrate", "--voc", str(tmp_path), "--head", "h", "--out", "o"])
    assert exit_.value.code == 2 and "one of the arguments --split --cross-fit is required" in capsys.readouterr().err
