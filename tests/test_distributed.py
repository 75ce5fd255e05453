"""torch.distributed helpers: the round-robin shard and the single-process fallback without torchrun (the
multi-process runs are in tests/test_cache_build.py, test_train_ddp.py and test_collection.py)."""
from __future__ import annotations

import pytest

from midlevel_fast.runtime.distributed import init_distributed, shard


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
