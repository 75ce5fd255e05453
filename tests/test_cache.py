"""The feature cache: round trip, refusal of mismatches, and resuming after kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from PIL import Image

from midlevel_fast.training.cache import CacheConfig, FeatureCache, build_cache

CONFIG = CacheConfig(backbone="toy", mode="dense", scales=[1.0, 2.0], grid_step=1 / 3, window_step=2, feature_dim=6)


def toy_extract(img: np.ndarray):
    """Deterministic stand-in for the CNN: per-box channel means of a few fixed boxes."""
    h, w = img.shape[:2]
    boxes = torch.tensor([[0, 0, w, h], [0, 0, w / 2, h / 2], [w / 2, h / 2, w, h]], dtype=torch.float32)
    feats = []
    for x0, y0, x1, y1 in boxes.int().tolist():
        patch = img[y0: max(y1, y0 + 1), x0: max(x1, x0 + 1)].reshape(-1, 3).astype(np.float32)
        feats.append(np.concatenate([patch.mean(0), patch.std(0)]) / 255)
    return torch.from_numpy(np.stack(feats)), boxes, torch.tensor([0, 1, 1])


def write_images(folder, n):
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        p = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(p)
        items.append((f"img{i:02d}", str(p)))
    return items


def test_roundtrip_and_reopen(tmp_path):
    items = write_images(tmp_path, 3)
    cache = build_cache(FeatureCache(tmp_path / "c", CONFIG), items, toy_extract, progress=False)
    assert cache.image_ids == ["img00", "img01", "img02"]
    got = FeatureCache(tmp_path / "c", CONFIG).load("img01")
    feats, boxes, _ = toy_extract(np.asarray(Image.open(items[1][1]).convert("RGB")))
    assert got.features.dtype == np.float16 and isinstance(got.features, np.memmap)
    np.testing.assert_array_equal(got.features, feats.half().numpy())
    np.testing.assert_array_equal(got.boxes, boxes.numpy())
    assert got.size == (21, 30)


def test_refuses_other_settings_and_tampered_files(tmp_path):
    items = write_images(tmp_path, 2)
    build_cache(FeatureCache(tmp_path / "c", CONFIG), items, toy_extract, progress=False)
    other = CacheConfig(**{**CONFIG.__dict__, "mode": "batched"})
    with pytest.raises(ValueError, match="different settings"):
        FeatureCache(tmp_path / "c", other)
    path = tmp_path / "c" / "images" / "img00.f16.npy"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match="img00"):
        FeatureCache(tmp_path / "c", CONFIG).verify()


def test_bad_feature_shape_is_refused(tmp_path):
    cache = FeatureCache(tmp_path / "c", CONFIG)
    with pytest.raises(ValueError, match="feature_dim"):
        cache.add("x", torch.zeros(3, 5), torch.zeros(3, 4), torch.zeros(3), (4, 4))


SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_cache import CONFIG, toy_extract, write_images
    from midlevel_fast.training.cache import FeatureCache, build_cache
    import pathlib

    def slow(img):
        time.sleep(0.15)
        return toy_extract(img)

    items = [(p.stem, str(p)) for p in sorted(pathlib.Path({images!r}).glob("*.png"))]
    build_cache(FeatureCache({root!r}, CONFIG), items, slow, progress=False)
""")


def test_resumes_after_kill_9(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    items = write_images(images, 12)
    root = tmp_path / "cache"
    script = SCRIPT.format(tests=os.path.dirname(__file__), images=str(images), root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", script])
    manifest = root / "manifest.json"
    deadline = time.time() + 60
    while time.time() < deadline:
        if manifest.exists() and len(json.loads(manifest.read_text())["images"]) >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(manifest.read_text())["images"]
    assert 4 <= len(done) < 12, "the build was not interrupted mid-way"
    partial = FeatureCache(root, CONFIG)
    partial.verify()  # whatever was recorded is complete

    calls = []

    def counting(img):
        calls.append(1)
        return toy_extract(img)

    resumed = build_cache(partial, items, counting, progress=False)
    assert len(calls) == 12 - len(done)  # nothing recomputed, nothing lost
    fresh = build_cache(FeatureCache(tmp_path / "fresh", CONFIG), items, toy_extract, progress=False)
    assert sorted(resumed.image_ids) == sorted(fresh.image_ids)
    for image_id in fresh.image_ids:
        np.testing.assert_array_equal(resumed.load(image_id).features, fresh.load(image_id).features)
    assert not [p.name for p in (root / "images").iterdir() if p.name.startswith(".")]  # temporaries cleaned
