"""Building feature caches: resuming after kill -9, several writers of one directory, the sharded build over 2
torchrun ranks against a single process, and where open_cache puts a config."""
from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from midlevel_fast.cache.feature_cache import CacheConfig, FeatureCache
from midlevel_fast.cache.build import build_cache, fill_cache, open_cache
from tests.distributed_worker import CACHE_CONFIG, tiny_model, write_images
from tests.helpers import REPO, run_worker, toy_extract, write_toy_images
from tests.helpers import TOY_CACHE_CONFIG as CONFIG

# A build that stops in the middle of writing the features of its fifth image (img04): half the bytes are in the
# temporary file when it says "stuck" and waits to be killed. No timing is involved: the parent kills it then.
STUCK_BUILD = textwrap.dedent("""
    import pathlib, sys, time
    sys.path.insert(0, {repo!r})
    from midlevel_fast.io.files import atomic_write, atomic_write_bytes
    from midlevel_fast.cache import feature_cache as store
    from midlevel_fast.cache.build import build_cache
    from tests.helpers import TOY_CACHE_CONFIG, toy_extract

    def stuck(path, data):
        if pathlib.Path(path).name != "img04.f16.npy":
            return atomic_write_bytes(path, data)

        def half_then_wait(tmp):
            pathlib.Path(tmp).write_bytes(data[: len(data) // 2])
            print("stuck", flush=True)
            time.sleep(600)

        atomic_write(path, half_then_wait)

    store.atomic_write_bytes = stuck  # the name FeatureCache.add writes through
    items = [(p.stem, str(p)) for p in sorted(pathlib.Path({images!r}).glob("*.png"))]
    build_cache(store.FeatureCache({root!r}, TOY_CACHE_CONFIG), items, toy_extract, progress=False)
""")


def test_resumes_after_kill_9_in_the_middle_of_a_write(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    items = write_toy_images(images, 12)
    root = tmp_path / "cache"
    script = STUCK_BUILD.format(repo=str(REPO), images=str(images), root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        # A minute for the child to start and cache four images (a second is usual); readline cannot block then.
        said = proc.stdout.readline() if select.select([proc.stdout], [], [], 60)[0] else "(nothing)"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert said == "stuck\n", "the build did not reach the fifth image's write"
    done = json.loads((root / "manifest.json").read_text())["images"]
    assert sorted(done) == ["img00", "img01", "img02", "img03"]  # the image in flight is not recorded
    assert [p.name for p in (root / "images").iterdir() if p.name.startswith(".img04.f16.npy.")], \
        "the kill left no half-written temporary to clean up"
    partial = FeatureCache(root, CONFIG)
    partial.verify()  # whatever was recorded is complete

    calls = []

    def counting(img, image_id):
        calls.append(image_id)
        return toy_extract(img)

    resumed = build_cache(partial, items, counting, progress=False)
    assert len(calls) == 12 - len(done)  # nothing recomputed, nothing lost
    fresh = build_cache(FeatureCache(tmp_path / "fresh", CONFIG), items, toy_extract, progress=False)
    assert sorted(resumed.image_ids) == sorted(fresh.image_ids)
    for image_id in fresh.image_ids:
        np.testing.assert_array_equal(resumed.load(image_id).features, fresh.load(image_id).features)
    assert not [p.name for p in (root / "images").iterdir() if p.name.startswith(".")]  # temporaries cleaned


def test_rank_writers_share_one_directory(tmp_path):
    """Two writers of one cache each keep their own manifest, and every reader sees the union."""
    items = write_toy_images(tmp_path, 5)
    writers = [FeatureCache(tmp_path / "c", CONFIG, rank=r) for r in range(2)]
    for r, w in enumerate(writers):
        build_cache(w, items, toy_extract, progress=False, part=(r, 2))
    assert sorted(writers[0].image_ids) == ["img00", "img02", "img04"]
    writers[0].refresh()
    reader = FeatureCache(tmp_path / "c", CONFIG)
    assert sorted(reader.image_ids) == sorted(writers[0].image_ids) == [i for i, _ in items]
    reader.verify()
    assert sorted(p.name for p in (tmp_path / "c").glob("manifest*.json")) == [
        "manifest.json", "manifest.rank0.json", "manifest.rank1.json"]
    with pytest.raises(ValueError, match="rank=1"):
        build_cache(writers[1], items, toy_extract, progress=False, part=(0, 2))


def test_open_cache_gives_each_config_its_own_directory(tmp_path):
    a = open_cache(tmp_path, CONFIG)
    assert a.root.parent == tmp_path and a.root.name.startswith("toy-dense-") and a.rank is None
    assert open_cache(tmp_path, CacheConfig(**CONFIG.__dict__)).root == a.root
    assert open_cache(tmp_path, CacheConfig(**{**CONFIG.__dict__, "window_step": 3})).root != a.root


def test_sharded_cache_equals_single_process_cache(tmp_path):
    write_images(tmp_path / "images", 7)
    proc = run_worker("cache", str(tmp_path / "images"), str(tmp_path / "cache"), str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"cache{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in reports] == [0, 1]
    ids = [f"im{i:02d}" for i in range(7)]
    assert sorted(reports[0]["ids"]) == sorted(reports[1]["ids"]) == ids  # every rank sees the whole cache
    sharded = open_cache(tmp_path / "cache", CACHE_CONFIG)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = tiny_model()
        single = fill_cache(open_cache(tmp_path / "single", CACHE_CONFIG), model.backbone,
                            [(f"im{i:02d}", tmp_path / "images" / f"im{i:02d}.png") for i in range(7)],
                            progress=False)
    finally:
        torch.set_num_threads(threads)
    assert sorted(sharded.image_ids) == sorted(single.image_ids) == ids
    sharded.verify()
    for image_id in ids:
        a, b = sharded.load(image_id), single.load(image_id)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert a.size == b.size
        np.testing.assert_array_equal(a.features, b.features)  # same kernels, one thread each
    manifests = sorted(p.name for p in sharded.root.glob("manifest*.json"))
    assert manifests == ["manifest.json", "manifest.rank0.json", "manifest.rank1.json"]
