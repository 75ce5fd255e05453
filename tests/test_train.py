"""Training on a synthetic cache whose features carry the class of the object a patch sits on."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from midlevel_fast.training.cache import CacheConfig, FeatureCache
from midlevel_fast.scoring.grid import grid
from midlevel_fast.training.labels import DROPPED, patch_labels
from midlevel_fast.training.train import TrainConfig, eval_set, evaluate_head, merge_patch_sets, patch_set, train_head
from midlevel_fast.training.voc import VocImage, VocObject

CLASSES = ["cat", "dog", "bus"]
DIM = 16


def synthetic(tmp_path, n_images: int, seed: int):
    """Images of 100x80 with one or two objects; a patch's feature is its label's prototype plus noise
    (dropped patches: the mean of the class prototypes), so a head can learn the labels exactly."""
    rng = np.random.default_rng(seed)
    config = CacheConfig(backbone="toy", mode="dense", scales=[1.0, 2.0, 3.0], grid_step=1 / 3, window_step=None,
                         feature_dim=DIM)
    cache = FeatureCache(tmp_path / f"cache{seed}", config)
    proto = rng.normal(size=(len(CLASSES) + 1, DIM)) * 2
    images = []
    g = grid(100, 80, config.scales)
    for i in range(n_images):
        objects = []
        for j in range(1 + i % 2):
            c = int(rng.integers(len(CLASSES)))
            x0, y0 = float(rng.uniform(0, 50)), float(rng.uniform(0, 40))
            objects.append(VocObject(CLASSES[c], (x0, y0, x0 + 45, y0 + 38), False, False))
        labels = patch_labels(g.boxes, [o.box for o in objects], [CLASSES.index(o.name) for o in objects],
                              len(CLASSES)).numpy()
        feats = np.where((labels == DROPPED)[:, None], proto[:-1].mean(0), proto[labels])
        feats += rng.normal(size=feats.shape) * 0.5
        image_id = f"s{seed}_{i}"
        cache.add(image_id, torch.from_numpy(feats).float(), g.boxes, g.scale_index, (80, 100))
        images.append(VocImage(image_id, tmp_path / f"{image_id}.jpg", 100, 80, objects))
    return cache, images


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    train_cache, train_images = synthetic(tmp, 40, 0)
    val_cache, val_images = synthetic(tmp, 20, 1)
    return train_cache, train_images, val_cache, val_images


CFG = TrainConfig(hidden=32, batch_size=32, max_epochs=12, bf16=False)


def test_patch_set_labels_and_resampling(data):
    cache, images, _, _ = data
    ps = patch_set(cache, images, CLASSES, bg_fraction=0.1, seed=0)
    assert ps.features.dtype == torch.float16 and len(ps.features) == len(ps.targets)
    assert ps.counts[:3].sum() > 0 and ps.counts[3] > 0
    full = patch_set(cache, images, CLASSES, bg_fraction=1.0, seed=0)
    assert abs(ps.counts[3] - round(0.1 * full.counts[3])) <= 1
    assert (ps.counts[:3] == full.counts[:3]).all()
    again = patch_set(cache, images, CLASSES, bg_fraction=0.1, seed=0)
    assert torch.equal(again.targets, ps.targets) and torch.equal(again.features, ps.features)


def test_merged_patch_sets_keep_every_row_and_count(data):
    cache, images, val_cache, val_images = data
    a, b = patch_set(cache, images, CLASSES), patch_set(val_cache, val_images, CLASSES)
    merged = merge_patch_sets([a, b])
    assert torch.equal(merged.features, torch.cat([a.features, b.features]))
    assert torch.equal(merged.targets, torch.cat([a.targets, b.targets]))
    assert (merged.counts == a.counts + b.counts).all()
    assert (a.counts == patch_set(cache, images, CLASSES).counts).all()  # the inputs are left as they were
    with pytest.raises(ValueError, match="no patch set"):
        merge_patch_sets([])


@pytest.mark.parametrize("objective", ["softmax", "multilabel"])
def test_training_learns_and_is_deterministic(data, objective):
    cache, images, val_cache, val_images = data
    cfg = TrainConfig(**{**CFG.__dict__, "objective": objective})
    train = patch_set(cache, images, CLASSES, seed=0, objective=objective)
    val = eval_set(val_cache, val_images, CLASSES)
    a = train_head(train, len(CLASSES), cfg, val, log=None)
    b = train_head(train, len(CLASSES), cfg, val, log=None)
    for pa, pb in zip(a.head.parameters(), b.head.parameters()):
        assert torch.equal(pa, pb)
    losses = [r["loss"] for r in a.history]
    assert losses[-1] < losses[0]
    assert a.best_map == max(r["val_map"] for r in a.history)
    _, m = evaluate_head(a.head, val, objective, 5.0)
    assert m == pytest.approx(a.best_map) and m > 0.65  # chance is about 0.5


def test_schedule_divides_the_rate_three_times_then_stops(data):
    cache, images, _, _ = data
    cfg = TrainConfig(**{**CFG.__dict__, "max_epochs": 200, "min_improvement": 0.5})
    res = train_head(patch_set(cache, images, CLASSES), len(CLASSES), cfg, None, log=None)
    rates = sorted({r["lr"] for r in res.history}, reverse=True)
    assert rates == pytest.approx([1e-2, 1e-3, 1e-4, 1e-5])
    assert len(res.history) < 200


def test_bad_config():
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(objective="hinge")
