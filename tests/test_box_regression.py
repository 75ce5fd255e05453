"""Box regression (midlevel_fast/model/box_regression.py and training/box_regression_fit.py): the rows are the
paper's positives with their objects' boxes, the ridge fit recovers a linear map, and classes without enough rows
keep their windows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midlevel_fast.model.box_regression import BoxRegression
from midlevel_fast.scoring.detections import decode_boxes, encode_boxes
from midlevel_fast.features.grid import grid
from midlevel_fast.training.box_regression_fit import MIN_ROWS, RegressionRows, fit_box_regression, regression_rows
from midlevel_fast.cache.feature_cache import CacheConfig, FeatureCache
from midlevel_fast.training.labels import qualification
from midlevel_fast.datasets.voc import VocImage, VocObject

CLASSES = ["cat", "dog"]
DIM = 7


def linear_cache(tmp_path: Path, n_images: int, seed: int, difficult_every: int = 0):
    """Images of 120x90 with one object; each grid patch's feature holds the R-CNN deltas onto that object
    (plus an offset, a constant and noise dimensions), so the regression is exactly linear."""
    rng = np.random.default_rng(seed)
    cfg = CacheConfig(backbone="toy", mode="dense", scales=[1.0, 2.0, 3.0], grid_step=1 / 3, window_step=None,
                      feature_dim=DIM)
    cache = FeatureCache(tmp_path / f"c{seed}", cfg)
    g = grid(120, 90, cfg.scales)
    images = []
    for i in range(n_images):
        w, h = rng.uniform(20, 60), rng.uniform(20, 60)
        x0, y0 = rng.uniform(0, 120 - w), rng.uniform(0, 90 - h)
        box = (x0, y0, x0 + w, y0 + h)
        name = CLASSES[i % 2]
        difficult = bool(difficult_every) and i % difficult_every == 0
        deltas = encode_boxes(g.boxes, torch.tensor([box]).expand(len(g.boxes), 4)).float()
        # The dog's deltas are stored doubled: a class-specific map.
        scale = 1.0 if name == "cat" else 0.5
        feats = torch.cat([deltas / scale + 0.1, torch.ones(len(g.boxes), 1),
                           torch.from_numpy(rng.normal(size=(len(g.boxes), 2))).float()], dim=1)
        cache.add(f"im{i}", feats, g.boxes, g.scale_index, (90, 120))
        images.append(VocImage(f"im{i}", Path("x.jpg"), 120, 90, [VocObject(name, box, difficult, False)]))
    return cache, images


def test_rows_are_the_positives_with_their_objects(tmp_path):
    cache, images = linear_cache(tmp_path, 4, 0, difficult_every=4)
    rows = regression_rows(cache, images, CLASSES)
    g = grid(120, 90, [1.0, 2.0, 3.0])
    expected = 0
    for img in images[1:]:  # image 0's object is difficult: none of its patches
        _, q = qualification(g.boxes, torch.tensor([img.objects[0].box]))
        expected += int(q[:, 0].sum())
    assert len(rows.labels) == expected > 0
    back = decode_boxes(rows.windows, rows.targets.float())
    objects = {tuple(np.round(img.objects[0].box, 3)) for img in images[1:]}
    assert {tuple(np.round(b, 3)) for b in back.double().numpy().tolist()} <= objects


def test_ridge_fit_recovers_a_linear_map(tmp_path):
    cache, images = linear_cache(tmp_path, 24, 1)
    reg = fit_box_regression(regression_rows(cache, images, CLASSES), len(CLASSES), ridge=1e-6)
    val_cache, val_images = linear_cache(tmp_path, 6, 2)
    val = regression_rows(val_cache, val_images, CLASSES)
    got = reg.deltas(val.features.float(), val.labels)
    torch.testing.assert_close(got.double(), val.targets, atol=1e-2, rtol=0)
    assert reg.description["identity_classes"] == []


def test_classes_with_too_few_rows_keep_their_windows(tmp_path):
    cache, images = linear_cache(tmp_path, 24, 3)
    rows = regression_rows(cache, images, CLASSES)
    few = torch.nonzero(rows.labels == 1).flatten()[: MIN_ROWS - 1]
    keep = torch.cat([torch.nonzero(rows.labels == 0).flatten(), few])
    rows.features, rows.windows, rows.targets, rows.labels = (t[keep] for t in
                                                              (rows.features, rows.windows, rows.targets, rows.labels))
    reg = fit_box_regression(rows, len(CLASSES))
    assert reg.description["identity_classes"] == [1]
    assert torch.count_nonzero(reg.weight[1]) == 0 and torch.count_nonzero(reg.bias[1]) == 0


def test_bad_input(tmp_path):
    cache, images = linear_cache(tmp_path, 2, 4)
    with pytest.raises(ValueError, match="ridge must be > 0"):
        fit_box_regression(regression_rows(cache, images, CLASSES), 2, ridge=0)
    empty = [VocImage(i.image_id, i.path, i.width, i.height, []) for i in images]
    rows = regression_rows(cache, empty, CLASSES)
    assert len(rows.labels) == 0
    assert fit_box_regression(rows, 2).description["identity_classes"] == [0, 1], "no rows: windows kept"
    with pytest.raises(ValueError, match=r"weight must be \(C, 4, F\)"):
        BoxRegression(torch.zeros(2, 3, 5), torch.zeros(2, 3))
    reg = BoxRegression(torch.zeros(2, 4, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"features must be \(N, 5\)"):
        reg.deltas(torch.zeros(3, 4), torch.zeros(3, dtype=torch.int64))


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(MIN_ROWS, 60), dim=st.integers(1, 80), ridge=st.floats(1e-3, 10.0), seed=st.integers(0, 999))
def test_ridge_fit_matches_an_augmented_least_squares_loop(rows, dim, ridge, seed):
    """Fewer rows than features (the dual system) or more (the primal), the fit is the ridge solution: per delta,
    least squares of the centred rows stacked on sqrt(ridge·n)·I (numpy's lstsq, no shared code), bias the mean
    residual."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, dim))
    t = rng.normal(size=(rows, 4))
    fit = fit_box_regression(RegressionRows(torch.from_numpy(x).half(), torch.zeros(rows, 4),
                                            torch.from_numpy(t), torch.zeros(rows, dtype=torch.int64)), 1, ridge)
    xh = torch.from_numpy(x).half().double().numpy()  # the fit reads float16 features
    xc = xh - xh.mean(0)
    for k in range(4):
        a = np.vstack([xc, np.sqrt(ridge * rows) * np.eye(dim)])
        b = np.concatenate([t[:, k] - t[:, k].mean(), np.zeros(dim)])
        w = np.linalg.lstsq(a, b, rcond=None)[0]
        np.testing.assert_allclose(fit.weight[0, k].numpy(), w, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fit.bias[0, k].item(), t[:, k].mean() - xh.mean(0) @ w, rtol=1e-4, atol=1e-5)
