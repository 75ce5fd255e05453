"""The feature cache store: round trip, refusal of other settings, of another format and of tampered files."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from midlevel_fast.cache.feature_cache import CACHE_FORMAT, CacheConfig, FeatureCache
from tests.helpers import TOY_CACHE_CONFIG as CONFIG
from tests.helpers import toy_extract, write_toy_images


def filled(root, items) -> FeatureCache:
    """A cache at ``root`` holding the toy features of ``items``, added one by one."""
    cache = FeatureCache(root, CONFIG)
    for image_id, path in items:
        img = np.asarray(Image.open(path).convert("RGB"))
        feats, boxes, scale_index = toy_extract(img)
        cache.add(image_id, feats, boxes, scale_index, img.shape[:2])
    return cache


def test_roundtrip_and_reopen(tmp_path):
    items = write_toy_images(tmp_path, 3)
    cache = filled(tmp_path / "c", items)
    assert cache.image_ids == ["img00", "img01", "img02"]
    got = FeatureCache(tmp_path / "c", CONFIG).load("img01")
    feats, boxes, scale_index = toy_extract(np.asarray(Image.open(items[1][1]).convert("RGB")))
    assert got.features.dtype == np.float16 and isinstance(got.features, np.memmap)
    np.testing.assert_array_equal(got.features, feats.half().numpy())
    np.testing.assert_array_equal(got.boxes, boxes.numpy())
    np.testing.assert_array_equal(got.scale_index, scale_index.numpy())
    assert got.size == (21, 30)
    with pytest.raises(KeyError, match="img09"):
        cache.load("img09")


def test_refuses_other_settings_and_tampered_files(tmp_path):
    filled(tmp_path / "c", write_toy_images(tmp_path, 2))
    other = CacheConfig(**{**CONFIG.__dict__, "mode": "batched"})
    with pytest.raises(ValueError, match="different settings"):
        FeatureCache(tmp_path / "c", other)
    path = tmp_path / "c" / "images" / "img00.f16.npy"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match="img00"):
        FeatureCache(tmp_path / "c", CONFIG).verify()


def test_a_cache_of_another_format_must_be_rebuilt(tmp_path):
    """A manifest written before the config fields were renamed (format 1: grid_stride, q) is refused, naming the
    directory and saying what to do, rather than read with the wrong field names."""
    root = tmp_path / "old"
    (root / "images").mkdir(parents=True)
    old = {"backbone": "toy", "mode": "dense", "scales": [1.0, 2.0], "grid_stride": 1 / 3, "q": 2, "feature_dim": 6}
    (root / "manifest.json").write_text(json.dumps({"format": "midlevel_fast.cache/1", "config": old, "images": {}}))
    assert CACHE_FORMAT != "midlevel_fast.cache/1"
    with pytest.raises(ValueError, match=rf"cache {re.escape(str(root))}: manifest.json has format "
                                         r"'midlevel_fast.cache/1'.*must be rebuilt; delete the directory"):
        FeatureCache(root, CONFIG)


def test_bad_feature_shape_and_image_id_are_refused(tmp_path):
    cache = FeatureCache(tmp_path / "c", CONFIG)
    with pytest.raises(ValueError, match="feature_dim"):
        cache.add("x", torch.zeros(3, 5), torch.zeros(3, 4), torch.zeros(3), (4, 4))
    for bad in ("a/b", ".hidden"):
        with pytest.raises(ValueError, match="file name"):
            cache.add(bad, torch.zeros(3, 6), torch.zeros(3, 4), torch.zeros(3), (4, 4))


def test_stale_temporaries_are_swept_on_open(tmp_path):
    filled(tmp_path / "c", write_toy_images(tmp_path, 1))
    stale = tmp_path / "c" / "images" / ".img01.f16.npy.abc123.tmp"
    stale.write_bytes(b"half a file")
    reopened = FeatureCache(tmp_path / "c", CONFIG)
    assert not stale.exists() and reopened.image_ids == ["img00"]
