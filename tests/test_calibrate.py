"""Fitting a head's calibration on scores it did not see (:mod:`midlevel_fast.recipes.calibrate`): the cross-fit's
folds, its out-of-fold scores on a synthetic cache, the training metadata it needs, the cache checks, and the head
file it writes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast import AdaptationHead, HeadInfo, load_head, save_head
from midlevel_fast.cache.feature_cache import FeatureCache
from midlevel_fast.recipes.calibrate import (FitData, cached_images, calibrate_head, cross_fit_folds,
                                              cross_fit_scores, fallback_messages, held_out_scores, scores_of,
                                              training_metadata)
from midlevel_fast.training.patches import patch_set
from midlevel_fast.training.train import TrainConfig, train_head
from tests.helpers import SYNTHETIC_CLASSES, SYNTHETIC_DIM, TOY_CACHE_CONFIG, make_voc, obj, synthetic_cache

CONFIG = TrainConfig(hidden=32, batch_size=32, max_epochs=6, bf16=False)


def info(**extra) -> HeadInfo:
    return HeadInfo(backbone="toy", class_names=list(SYNTHETIC_CLASSES), scales=[1.0, 2.0, 3.0], layers=2,
                    hidden=16, extra=extra)


@given(n=st.integers(2, 60), folds=st.integers(2, 10), seed=st.integers(0, 3))
def test_folds_are_disjoint_cover_every_image_and_are_seeded(n, folds, seed):
    if folds > n:
        with pytest.raises(ValueError, match=rf"folds \({folds}\) cannot exceed the number of images \({n}\)"):
            cross_fit_folds(n, folds, seed)
        return
    parts = cross_fit_folds(n, folds, seed)
    assert len(parts) == folds and sorted(np.concatenate(parts).tolist()) == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1 and all(len(p) for p in parts)
    assert all((np.diff(p) > 0).all() for p in parts)
    assert all(np.array_equal(a, b) for a, b in zip(parts, cross_fit_folds(n, folds, seed)))


def test_folds_depend_on_the_seed_and_need_two():
    assert any(not np.array_equal(a, b) for a, b in zip(cross_fit_folds(40, 4, 0), cross_fit_folds(40, 4, 1)))
    with pytest.raises(ValueError, match="folds must be >= 2, got 1"):
        cross_fit_folds(10, 1)


def test_cross_fit_scores_each_fold_with_a_head_that_did_not_see_it(tmp_path):
    cache, images = synthetic_cache(tmp_path, 9, seed=3)
    lines = []
    data = cross_fit_scores([cache], images, info(), CONFIG, folds=3, seed=1, log=lines.append)
    assert data.scores.shape == (9, 3) and data.scores.dtype == torch.float64
    assert data.image_ids == [im.image_id for im in images]
    assert data.description == {"source": "cross-fit", "mode": "dense", "folds": 3, "seed": 1, "epochs": 6}
    assert len(lines) == 3 and lines[0].startswith("fold 1/3: head trained on 6 images (")
    # Fold 1 again by hand: a head trained on the other six images, scoring the held-out three.
    held = cross_fit_folds(9, 3, 1)[0]
    others = [im for i, im in enumerate(images) if i not in set(held.tolist())]
    head = train_head(patch_set(cache, others, SYNTHETIC_CLASSES, CONFIG.bg_fraction, CONFIG.seed), 3, CONFIG, None,
                      log=None).head
    by_hand = scores_of(head, info(), cache, [images[i] for i in held])
    assert torch.equal(data.scores[held], by_hand.scores) and torch.equal(data.positives[held], by_hand.positives)
    # The synthetic features carry the labels: held-out positives score higher than negatives.
    assert data.scores[data.positives].log().mean() > data.scores[~data.positives].log().mean() + 1


def test_cross_fit_pools_modes_and_pairs_them_for_the_consistency_term(tmp_path):
    dense, images = synthetic_cache(tmp_path, 6, seed=4)
    crops = FeatureCache(tmp_path / "crops", dataclasses.replace(dense.config, mode="batched"))
    for im in images:  # the same boxes with other features: every window pairs with its own crop
        c = dense.load(im.image_id)
        crops.add(im.image_id, torch.from_numpy(np.array(c.features)).float() + 0.1, torch.tensor(c.boxes),
                  torch.tensor(c.scale_index), c.size)
    lines = []
    config = dataclasses.replace(CONFIG, consistency=1.0, max_epochs=2)
    data = cross_fit_scores([dense, crops], images, info(), config, folds=2, log=lines.append)
    assert data.description["mode"] == ["dense", "batched"] and len(lines) == 2
    assert torch.isfinite(data.scores).all() and data.scores.shape == (6, 3)


def test_training_metadata_comes_from_the_head_file():
    splits, modes, config = training_metadata(info(splits=["train"], mode=["dense", "batched"],
                                                   train=dataclasses.asdict(CONFIG), best_epoch=0))
    assert splits == ["train"] and modes == ["dense", "batched"] and config == dataclasses.replace(CONFIG, max_epochs=1)
    with pytest.raises(ValueError, match=r"no training metadata \(mode, train missing.*--split instead"):
        training_metadata(info(splits=["train"]))
    with pytest.raises(ValueError, match="not a TrainConfig"):
        training_metadata(info(splits=["train"], mode="dense", train={"learning": 1}))


def test_held_out_split_must_be_unseen_and_cached(tmp_path):
    with pytest.raises(ValueError, match=r"trained on split 'train'.*or use --cross-fit"):
        held_out_scores(AdaptationHead(SYNTHETIC_DIM, 4), info(splits=["train"]), tmp_path, "train")
    voc = make_voc(tmp_path / "voc", obj("cat"))
    cache = FeatureCache(tmp_path / "cache", TOY_CACHE_CONFIG)
    with pytest.raises(ValueError, match=r"lacks 1 of the 1 images of split 'train' \(e.g. img\); build it with "
                                         r"`midlevel-fast cache --voc .* --split train --mode dense`"):
        cached_images(voc, "train", [cache])


def test_calibrate_head_writes_the_head_with_its_calibration(tmp_path):
    head = AdaptationHead(SYNTHETIC_DIM, 4, hidden=16)
    save_head(tmp_path / "h.safetensors", head, info(), dtype=torch.float16)
    scores = torch.tensor([[0.5, 0.1, 1e-4], [1e-3, 0.6, 2e-4], [0.7, 1e-5, 3e-4]], dtype=torch.float64)
    positives = torch.tensor([[True, False, False], [False, True, False], [True, False, False]])
    data = FitData(scores, positives, torch.zeros_like(positives), ["a", "b", "c"],
                   {"source": "held-out", "splits": ["val"], "mode": "dense", "folds": None})
    cal = calibrate_head(tmp_path / "h.safetensors", tmp_path / "out.safetensors", data, "isotonic")
    loaded, loaded_info = load_head(tmp_path / "out.safetensors")
    assert loaded_info.calibration == cal and loaded_info.extra == info().extra
    assert cal.description == {"source": "held-out", "splits": ["val"], "mode": "dense", "folds": None,
                               "image_ids": ["a", "b", "c"], "method": "isotonic", "images": 3, "fallback": ["bus"]}
    # Weights keep the file's dtype: same bytes as the float16 original.
    torch.testing.assert_close(loaded.state_dict(), load_head(tmp_path / "h.safetensors")[0].state_dict(),
                               rtol=0, atol=0)
    assert (tmp_path / "out.safetensors").stat().st_size < 2 * (tmp_path / "h.safetensors").stat().st_size
    assert fallback_messages(cal, SYNTHETIC_CLASSES) == [
        "class 'bus' has no positive in the fit data (3 images): its presence is the prior (0 + 1)/(3 + 2) = 0.2000 "
        "whatever its score"]


def test_held_out_split_sharing_images_with_the_training_splits_is_refused(tmp_path):
    voc = make_voc(tmp_path / "voc", obj("cat"))  # train.txt: img
    main = voc / "ImageSets" / "Main"
    (main / "all.txt").write_text("img\nother\n")
    (main / "same.txt").write_text("img\n")
    head = AdaptationHead(SYNTHETIC_DIM, 4)
    with pytest.raises(ValueError, match=r"1 of the 2 images of split 'all' are in the head's training splits "
                                         r"\['train'\] \(e.g. img\): pass --unseen-only to fit on the other 1"):
        held_out_scores(head, info(splits=["train"]), voc, "all")
    with pytest.raises(ValueError, match=r"every image of split 'same' is in the head's training splits"):
        held_out_scores(head, info(splits=["train"]), voc, "same", unseen_only=True)
