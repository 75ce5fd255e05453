"""The VOC procedure behind the ``cache``, ``train`` and ``eval`` commands, on a one-image VOC tree, dense features
only (the grid crops' forward passes take a minute on two cores; tests/test_cli.py pools both modes and trains with
the consistency term through the same functions)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from midlevel_fast.model.head import load_head
from midlevel_fast.model.classifier import load_model
from midlevel_fast.training.patches import patch_set
from midlevel_fast.training.train import TrainConfig
from midlevel_fast.datasets.voc import VOC_CLASSES, load_split
from midlevel_fast.recipes.voc_run import TABLE_METHODS, cache_voc_splits, evaluate_voc_head, train_voc_head
from tests.helpers import make_voc, obj

CAT = VOC_CLASSES.index("cat")


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """A VOC tree whose one image (a cat) is both the train and the val split, and a cache folder for it."""
    tmp = tmp_path_factory.mktemp("voc_run")
    root = make_voc(tmp / "voc", obj("cat", (4, 3, 36, 28)))
    (root / "ImageSets" / "Main" / "val.txt").write_text("img\n")
    return root, tmp / "cache"


def test_cache_voc_splits_fills_a_verified_cache_per_mode(voc):
    root, cache_base = voc
    caches = cache_voc_splits(root, ["train", "val"], modes=["dense"], cache_base=cache_base)
    assert [c.config.mode for c in caches] == ["dense"]
    assert caches[0].image_ids == ["img"] and caches[0].root.parent == cache_base
    assert caches[0].config.window_step is None and caches[0].config.backbone == "efficientnet_lite0"
    assert len(caches[0].load("img").boxes) > 0


def test_train_voc_head_writes_the_head_and_reports(voc, tmp_path):
    root, cache_base = voc
    lines = []
    run = train_voc_head(root, tmp_path / "head.safetensors", cache_base=cache_base,
                         config=TrainConfig(hidden=16, max_epochs=2), log=lines.append)
    (cache,) = cache_voc_splits(root, ["train"], cache_base=cache_base)  # already cached
    rows = patch_set(cache, load_split(root, "train"), VOC_CLASSES)
    assert (run.images, run.rows, run.background, run.pairs) == (1, len(rows.features), int(rows.counts[-1]), 0)
    assert lines[0].startswith(f"{run.rows} training patches from 1 images ({run.background} background kept), "
                               "loaded in ")
    assert len(lines) == 1 + len(run.result.history)  # then one line per epoch
    _, info = load_head(tmp_path / "head.safetensors")
    assert info == run.info and info.extra["mode"] == "dense" and info.extra["splits"] == ["train"]
    assert info.extra["train"]["hidden"] == 16 and info.extra["best_epoch"] == run.result.best_epoch
    # The only val image holds the only cat: ranked first whatever the scores. No other class has a positive.
    assert list(run.val_ap) == list(TABLE_METHODS) == ["voc2007", "voc2010"]
    for ap in run.val_ap.values():
        assert ap[CAT] == 1.0 and np.isnan(np.delete(ap, CAT)).all()


def test_consistency_needs_both_modes_before_any_work(voc, tmp_path):
    root, _ = voc
    with pytest.raises(ValueError, match="needs the modes 'dense' and 'batched', got \\['dense'\\]"):
        train_voc_head(root, tmp_path / "head.safetensors", cache_base=tmp_path / "cache",
                       config=TrainConfig(consistency=1.0), log=None)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "head.safetensors").exists()


def test_evaluate_voc_head_per_exponent_and_method(voc, tmp_path):
    root, cache_base = voc
    head_file = tmp_path / "head.safetensors"
    train_voc_head(root, head_file, val_split=None, cache_base=cache_base, config=TrainConfig(hidden=16, max_epochs=1),
                   log=None)
    model = load_model(head_file)
    ev = evaluate_voc_head(model, root, "val", cache_base=cache_base, ks=[1.0, 5.0])
    assert list(ev.ap) == [(1.0, "voc2007"), (1.0, "voc2010"), (5.0, "voc2007"), (5.0, "voc2010")]
    assert ev.images == 1 and ev.patches > 0
    assert all(ap[CAT] == 1.0 for ap in ev.ap.values())
    default = evaluate_voc_head(model, root, "val", cache_base=cache_base)
    assert list(default.ap) == [(model.info.k, "voc2007"), (model.info.k, "voc2010")]
    assert not math.isnan(default.ap[(model.info.k, "voc2010")][CAT])


def test_train_fits_the_box_regression_and_fit_boxes_refits_it(voc, tmp_path, capsys):
    from midlevel_fast.cli import main
    from midlevel_fast.model.head import stored_dtype
    root, cache_base = voc
    head_file = tmp_path / "h.safetensors"
    train_voc_head(root, head_file, config=TrainConfig(max_epochs=1), cache_base=cache_base, log=None)
    _, info = load_head(head_file)
    reg = info.box_regression
    # One image: fewer than MIN_ROWS positives of the cat, so every class keeps its windows, and it says so.
    assert reg is not None and reg.description["splits"] == ["train"] and reg.description["mode"] == "dense"
    assert reg.description["identity_classes"] == list(range(len(VOC_CLASSES)))
    assert reg.description["rows"][CAT] > 0
    out = tmp_path / "boxes.safetensors"
    assert main(["fit-boxes", "--voc", str(root), "--head", str(head_file), "--split", "train", "val",
                 "--ridge", "3", "--out", str(out), "--cache", str(cache_base)]) == 0
    printed = capsys.readouterr().out
    assert f"positive windows of train+val; head written to {out}" in printed and "boxes kept as windows" in printed
    _, info2 = load_head(out)
    assert info2.box_regression.description["ridge"] == 3 and info2.box_regression.description["images"] == 2
    assert info2.extra == info.extra and stored_dtype(out) == stored_dtype(head_file)


def test_fit_boxes_refuses_splits_without_objects(tmp_path, capsys):
    from midlevel_fast.cli import main
    root = make_voc(tmp_path / "empty")
    head_file = tmp_path / "h.safetensors"
    train_voc_head(make_voc(tmp_path / "cats", obj("cat", (4, 3, 36, 28))), head_file, val_split=None,
                   config=TrainConfig(max_epochs=1), cache_base=tmp_path / "cache", log=None)
    assert main(["fit-boxes", "--voc", str(root), "--head", str(head_file), "--out", str(tmp_path / "o.safetensors"),
                 "--cache", str(tmp_path / "cache")]) == 2
    assert "hold no object of the head's classes" in capsys.readouterr().err


def test_fit_boxes_on_the_layout_by_default(voc, tmp_path):
    from midlevel_fast.cli import main
    root, cache_base = voc
    head_file, out = tmp_path / "h.safetensors", tmp_path / "layout.safetensors"
    train_voc_head(root, head_file, config=TrainConfig(max_epochs=1), cache_base=cache_base, log=None)
    assert load_head(head_file)[1].box_regression.features == "mid-level", "train fits the cheap one"
    assert main(["fit-boxes", "--voc", str(root), "--head", str(head_file), "--out", str(out),
                 "--cache", str(cache_base)]) == 0
    reg = load_head(out)[1].box_regression
    assert reg.features == "layout" and reg.feature_dim == 1280 * 5
    assert any(p.name.startswith("efficientnet_lite0+layout-dense-") for p in cache_base.iterdir())
    assert load_model(out).regression_backbone().feature_dim == 1280 * 5
