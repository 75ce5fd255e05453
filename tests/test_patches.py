"""Training and evaluation rows from a feature cache: labels, background resampling, merging, ground truth."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from midlevel_fast.training.patches import eval_set, merge_patch_sets, patch_set
from tests.helpers import SYNTHETIC_CLASSES as CLASSES
from tests.helpers import synthetic_cache


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("patches")
    return synthetic_cache(tmp, 40, 0) + synthetic_cache(tmp, 20, 1)


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


def test_multilabel_rows_are_the_softmax_rows_with_multi_hot_targets(data):
    cache, images, _, _ = data
    soft = patch_set(cache, images, CLASSES, bg_fraction=1.0, seed=0)
    multi = patch_set(cache, images, CLASSES, bg_fraction=1.0, seed=0, objective="multilabel")
    assert multi.targets.shape == (len(multi.features), len(CLASSES) + 1) and multi.targets.dtype == torch.float32
    assert set(multi.targets.unique().tolist()) <= {0.0, 1.0} and (multi.targets.sum(1) >= 1).all()
    # Every softmax row is kept with its one class; multi-label rows only add patches of several clean objects.
    assert len(multi.features) >= len(soft.features)
    assert multi.counts[-1] == soft.counts[-1]


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


def test_eval_set_holds_every_patch_and_the_image_labels(data):
    _, _, cache, images = data
    ev = eval_set(cache, images, CLASSES)
    sizes = [len(cache.load(im.image_id).boxes) for im in images]
    assert len(ev.features) == len(ev.image_index) == sum(sizes)
    assert torch.equal(ev.image_index, torch.arange(len(images)).repeat_interleave(torch.tensor(sizes)))
    expected = np.array([[c in {o.name for o in im.objects} for c in CLASSES] for im in images])
    np.testing.assert_array_equal(ev.positives, expected)
    assert not ev.ignore.any()  # no difficult objects
