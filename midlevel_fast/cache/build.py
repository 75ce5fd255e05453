"""Building and filling feature caches (:mod:`midlevel_fast.cache.feature_cache`): where a cache lives, computing the
images it misses, and sharding that work over ``torchrun`` ranks.

Sharded builds: :func:`open_cache` opens the cache as this rank's writer under an initialised ``torch.distributed``
group (see the cache's module docstring), and :func:`fill_cache` then computes only this rank's share
(:func:`midlevel_fast.runtime.distributed.shard` of the item list, which must be the same on every rank) between
two barriers, so every rank returns with the whole cache visible. The result is the cache a single process builds:
the same image files, with the entries spread over several manifest files. Ranks must reach the same directory
(a shared filesystem).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from midlevel_fast.backbones.layout import BackboneLike
from midlevel_fast.io.image_io import load_image
from midlevel_fast.runtime.progress import progress_bar
from midlevel_fast.runtime.distributed import barrier, current, shard
from midlevel_fast.features.patch_features import patch_features
from midlevel_fast.cache.feature_cache import CacheConfig, FeatureCache

log = logging.getLogger(__name__)


def build_cache(
    cache: FeatureCache,
    items: Iterable[tuple[str, str | Path]],
    extract: Callable[[np.ndarray, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    progress: bool | None = None,
    part: tuple[int, int] | None = None,
) -> FeatureCache:
    """Adds every ``(image_id, path)`` not yet in ``cache``, computing ``extract(rgb_uint8_hwc, image_id) ->
    (features, boxes, scale_index)`` (the id tells an extractor of several items per image which one it is). Resumes
    where a previous (killed) build stopped. Shows a tqdm bar in images/s (``progress``: ``None`` follows this module's
    logger, :func:`midlevel_fast.runtime.progress.progress_bar`).

    ``part``: ``(rank, world_size)`` to compute only that rank's share of ``items`` (round-robin by position);
    with ``world_size > 1`` the cache must be that rank's writer (``FeatureCache(..., rank=rank)``).
    """
    items = list(items)
    desc = f"caching {cache.config.mode} features"
    if part is not None and part[1] > 1:
        rank, world = part
        if cache.rank != rank:
            raise ValueError(f"rank {rank} of a sharded build must write through FeatureCache(..., rank={rank}), "
                             f"not a cache opened with rank={cache.rank}")
        items = shard(items, rank, world)
        desc += f" (rank {rank}/{world})"
    todo = [(i, p) for i, p in items if i not in cache]
    bar = progress_bar(log, progress, iterable=todo, unit="img", desc=desc)
    start = time.perf_counter()
    for image_id, path in bar:
        img = load_image(path)
        with torch.inference_mode():
            feats, boxes, scale_index = extract(img, image_id)
        cache.add(image_id, feats, boxes, scale_index, (img.shape[0], img.shape[1]))
        bar.set_postfix(patches=len(boxes), elapsed=f"{time.perf_counter() - start:.0f}s")
    return cache


def default_cache_root() -> Path:
    """``$MIDLEVEL_FAST_CACHE`` or ``~/.cache/midlevel_fast``."""
    env = os.environ.get("MIDLEVEL_FAST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "midlevel_fast"


def open_cache(base: str | os.PathLike, config: CacheConfig) -> FeatureCache:
    """The cache for ``config`` under ``base``, in a subdirectory named after the config so that different
    settings never share a directory. Under an initialised ``torch.distributed`` group of several ranks it is
    opened as this rank's writer (see the module docstring)."""
    digest = hashlib.sha1(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:8]
    ctx = current()
    return FeatureCache(Path(base) / f"{config.backbone}-{config.mode}-{digest}", config,
                        rank=ctx.rank if ctx.distributed else None)


def fill_cache(cache: FeatureCache, backbone: BackboneLike, items: Iterable[tuple[str, str | Path]],
               progress: bool | None = None) -> FeatureCache:
    """Caches the patch features of ``items`` (``(image_id, path)``) as ``cache.config`` says.

    When ``cache`` is a rank's writer under an initialised process group of several ranks, this rank computes its
    share only, and every rank returns once the whole of ``items`` is cached (``items`` must be the same list on
    every rank)."""
    cfg = cache.config
    if backbone.name != cfg.backbone or backbone.feature_dim != cfg.feature_dim:
        raise ValueError(f"backbone {backbone.name} does not match cache config {cfg.backbone}")

    def extract(img: np.ndarray, image_id: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return patch_features(backbone, img, cfg.mode, cfg.scales, cfg.grid_step, cfg.window_step)

    ctx = current()
    if not (ctx.distributed and cache.rank is not None):
        return build_cache(cache, items, extract, progress)
    barrier(ctx)  # every rank has opened the cache (and swept stale temporaries) before any rank writes
    build_cache(cache, items, extract, progress, part=(ctx.rank, ctx.world_size))
    barrier(ctx)
    cache.refresh()
    return cache
