"""torch.distributed helpers, the sharded cache build and DDP training parity (2 CPU ranks, gloo, via torchrun)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from midlevel_fast.training.cache import FeatureCache, build_cache, fill_cache, open_cache
from midlevel_fast.scaleout.distributed import init_distributed, shard
from midlevel_fast.training.train import train_head
from tests.distributed_worker import (CACHE_CONFIG, TRAIN_CONFIGS, WORKER, synthetic_rows, tiny_model, train_inputs,
                                      write_images)

# Weights of a 2-rank DDP run against a single process (fp32, dropout 0.5, 4 epochs): equal up to float32
# summation order, about 3e-8 here. Ranks drawing their own dropout masks instead would miss by about 1e-2.
PARITY_ATOL, PARITY_RTOL = 1e-6, 1e-5


def torchrun(*args: str, cwd, nproc: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs tests/distributed_worker.py on ``nproc`` local CPU ranks."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", WORKER, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("n", [0, 1, 5, 16, 17])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shard_is_complete_and_disjoint(n, world):
    items = [f"im{i:03d}" for i in range(n)]
    shares = [shard(items, r, world) for r in range(world)]
    assert sorted(sum(shares, [])) == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shard(items, 1 % world, world) == shares[1 % world]  # deterministic


def test_shard_rejects_bad_rank():
    with pytest.raises(ValueError, match="rank 2 of 2"):
        shard([1, 2], 2, 2)


def test_without_torchrun_everything_is_single_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed()
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.owns_group) == (0, 1, False, False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "zero")
    with pytest.raises(RuntimeError, match="RANK='zero'"):
        init_distributed()


def test_rank_writers_share_one_directory(tmp_path):
    """Two writers of one cache each keep their own manifest, and every reader sees the union."""
    from tests.test_cache import CONFIG, toy_extract, write_images as toy_images

    items = toy_images(tmp_path, 5)
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


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One torchrun launch: a sharded cache build, then DDP training of each config (both objectives, the
    consistency term)."""
    tmp = tmp_path_factory.mktemp("ddp")
    write_images(tmp / "images", 7)
    proc = torchrun("cache-train", str(tmp / "images"), str(tmp / "cache"), str(tmp), cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp


def test_sharded_cache_equals_single_process_cache(two_ranks, tmp_path):
    reports = [json.loads((two_ranks / f"cache{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in reports] == [0, 1]
    ids = [f"im{i:02d}" for i in range(7)]
    assert sorted(reports[0]["ids"]) == sorted(reports[1]["ids"]) == ids  # every rank sees the whole cache
    sharded = open_cache(two_ranks / "cache", CACHE_CONFIG)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = tiny_model()
        single = fill_cache(open_cache(tmp_path, CACHE_CONFIG), model.backbone,
                            [(f"im{i:02d}", two_ranks / "images" / f"im{i:02d}.png") for i in range(7)],
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


@pytest.mark.parametrize("objective", list(TRAIN_CONFIGS))
def test_ddp_training_matches_a_single_process(two_ranks, objective):
    config = TRAIN_CONFIGS[objective]
    train, val, pairs = train_inputs(objective)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train_head(train, 3, config, val, log=None, data_parallel=False, pairs=pairs)
    finally:
        torch.set_num_threads(threads)
    ranks = [torch.load(two_ranks / f"{objective}{r}.pt") for r in range(2)]
    for name, value in single.head.state_dict().items():
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name])  # the ranks agree exactly
        torch.testing.assert_close(ranks[0]["state"][name], value, atol=PARITY_ATOL, rtol=PARITY_RTOL)
    assert ranks[0]["best_epoch"] == single.best_epoch
    got = [(h["epoch"], h["lr"]) for h in ranks[0]["history"]]
    assert got == [(h["epoch"], h["lr"]) for h in single.history]
    np.testing.assert_allclose([h["loss"] for h in ranks[0]["history"]], [h["loss"] for h in single.history],
                               rtol=1e-5)
    assert single.history[-1]["loss"] < single.history[0]["loss"]


def test_data_parallel_needs_a_process_group():
    train, _ = synthetic_rows(n=20)
    with pytest.raises(RuntimeError, match="process group"):
        train_head(train, 3, TRAIN_CONFIGS["softmax"], log=None, data_parallel=True)
