"""One rank of the multi-process tests, launched by ``torchrun --standalone --nproc-per-node 2`` from
tests/test_collection.py, tests/test_cache_build.py and tests/test_train_ddp.py (not a test module itself).

    score IMAGES OUT REPORT_DIR [--slow SECONDS]   score_collection; writes REPORT_DIR/rank<r>.json
    cache IMAGES CACHE_BASE REPORT_DIR             sharded fill_cache; writes REPORT_DIR/cache<r>.json
    train REPORT_DIR                               DDP train_head per config; writes REPORT_DIR/<config><r>.pt

It imports nothing from ``tests`` (torchrun puts only this folder on ``sys.path``); the test modules take the
configs and inputs of the runs from here, so both sides use the same.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from midlevel_fast.model.classifier import PatchClassifier, load_model
from midlevel_fast.scaleout import collection
from midlevel_fast.scaleout.collection import score_collection
from midlevel_fast.scaleout.inputs import list_images
from midlevel_fast.runtime.distributed import DistContext, process_group, shard
from midlevel_fast.cache.feature_cache import CacheConfig
from midlevel_fast.cache.build import fill_cache, open_cache
from midlevel_fast.training.consistency import PairSet
from midlevel_fast.training.patches import EvalSet, PatchSet
from midlevel_fast.training.train import TrainConfig, train_head

WORKER = os.path.abspath(__file__)
CACHE_CONFIG = CacheConfig(backbone="efficientnet_lite0", mode="dense", scales=[1.0], grid_step=1 / 3, window_step=None,
                           feature_dim=1280)
# 201 rows in batches of 25: the last global batch has one row, so rank 1 of 2 gets an empty slice.
TRAIN_CONFIGS = {
    "softmax": TrainConfig(hidden=32, batch_size=25, max_epochs=4, bf16=False, dropout=0.5),
    "multilabel": TrainConfig(hidden=32, batch_size=25, max_epochs=4, bf16=False, dropout=0.5,
                              objective="multilabel"),
    "consistency": TrainConfig(hidden=32, batch_size=25, max_epochs=4, bf16=False, dropout=0.5, consistency=2.0),
    # 21 images in batches of 4: the last global batch has one image, so rank 1 of 2 gets none.
    "image-level": TrainConfig(hidden=32, max_epochs=4, bf16=False, dropout=0.5, supervision="image",
                               pooling="power-mean", images_per_batch=4),
}


def write_images(folder: Path, n: int, corrupt: tuple[int, ...] = ()) -> list[Path]:
    """``n`` small random PNGs ``im00.png``...; those at ``corrupt`` positions are cut short."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"im{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (40 + i, 56, 3), dtype=np.uint8)).save(p)
        if i in corrupt:
            p.write_bytes(p.read_bytes()[:200])
        paths.append(p)
    return paths


def synthetic_rows(n: int = 201, dim: int = 16, classes: int = 3) -> tuple[PatchSet, EvalSet]:
    """Training rows whose features are their label's prototype plus noise, and a small evaluation set."""
    rng = np.random.default_rng(0)
    proto = rng.normal(size=(classes + 1, dim)) * 2
    labels = rng.integers(0, classes + 1, n)
    feats = torch.from_numpy(proto[labels] + rng.normal(size=(n, dim))).half()
    train = PatchSet(feats, torch.from_numpy(labels), np.bincount(labels, minlength=classes + 1))
    images, per_image = 8, 10
    val_labels = rng.integers(0, classes + 1, images * per_image)
    val = EvalSet(torch.from_numpy(proto[val_labels] + rng.normal(size=(len(val_labels), dim))).half(),
                  torch.arange(images).repeat_interleave(per_image),
                  np.stack([np.isin(np.arange(classes), val_labels[i * per_image:(i + 1) * per_image])
                            for i in range(images)]),
                  np.zeros((images, classes), bool))
    return train, val


def signal_windows(n_images: int, seed: int, windows: int = 12, dim: int = 16, classes: int = 3,
                   noise: float = 0.5) -> tuple[EvalSet, torch.Tensor]:
    """Images with image-level labels only: each has ``windows`` (8 to ``windows``, varying) windows of noise
    features, one or two classes, and for each of them exactly one window (returned, ``(n_images, classes)``,
    -1 for an absent class) whose features are the class prototype plus noise; prototypes fixed by ``seed=0``."""
    proto = np.random.default_rng(0).normal(size=(classes, dim)) * 2
    rng = np.random.default_rng(seed)
    feats, index, positives, signal = [], [], [], torch.full((n_images, classes), -1)
    for i in range(n_images):
        n = int(rng.integers(8, windows + 1))
        x = rng.normal(size=(n, dim)) * noise
        present = rng.choice(classes, size=1 + i % 2, replace=False)
        where = rng.choice(n, size=len(present), replace=False)
        x[where] += proto[present]
        signal[i, torch.from_numpy(present)] = torch.from_numpy(where)
        feats.append(x)
        index.append(np.full(n, i))
        positives.append(np.isin(np.arange(classes), present))
    return (EvalSet(torch.from_numpy(np.concatenate(feats)).half(), torch.from_numpy(np.concatenate(index)),
                    np.stack(positives), np.zeros((n_images, classes), bool)), signal)


def multilabel(train: PatchSet, classes: int = 3) -> PatchSet:
    """``train`` with one-hot float targets, for the multi-label objective."""
    hot = torch.nn.functional.one_hot(train.targets, classes + 1).float()
    return PatchSet(train.features, hot, train.counts)


def train_inputs(name: str) -> tuple[PatchSet | EvalSet, EvalSet, PairSet | None]:
    """Training rows, evaluation set and (for the consistency config) pairs of each row with a shifted copy."""
    if name == "image-level":
        return signal_windows(21, seed=1)[0], signal_windows(8, seed=2)[0], None
    train, val = synthetic_rows()
    if name == "multilabel":
        return multilabel(train), val, None
    if name == "consistency":
        shifted = train.features + torch.linspace(-1, 1, train.features.shape[1]).half()
        return train, val, PairSet(train.features, shifted, torch.arange(len(shifted)).repeat(2, 1).T.contiguous())
    return train, val, None


def tiny_model() -> PatchClassifier:
    """EfficientNet-Lite0's ImageNet classifier at one scale: about 25 ms per 64x48 image on one thread."""
    model = load_model("imagenet")
    model.info.scales = [1.0]
    return model


def run_score(args: argparse.Namespace, ctx: DistContext) -> None:
    if args.slow:
        fast = collection.score_image

        def slow(*a, **kw):
            time.sleep(args.slow)
            return fast(*a, **kw)

        collection.score_image = slow  # the name score_collection calls
    report = Path(args.report)
    (report / f"pid{ctx.rank}").write_text(str(os.getpid()))
    res = score_collection(args.images, args.out, tiny_model(), top=3, num_workers=1, progress=False)
    keys = [key for key, _ in shard(list_images(args.images), ctx.rank, ctx.world_size)]
    (report / f"rank{ctx.rank}.json").write_text(json.dumps(
        {"shard": keys, "scored": res.scored, "resumed": res.resumed, "failed": res.failed, "rows": res.rows}))


def run_cache(args: argparse.Namespace, ctx: DistContext) -> None:
    model = tiny_model()
    feature_cache = open_cache(args.cache, CACHE_CONFIG)
    items = [(p.stem, p) for p in sorted(Path(args.images).glob("*.png"))]
    fill_cache(feature_cache, model.backbone, items, progress=False)
    (Path(args.report) / f"cache{ctx.rank}.json").write_text(
        json.dumps({"rank": feature_cache.rank, "ids": feature_cache.image_ids}))


def run_train(args: argparse.Namespace, ctx: DistContext) -> None:
    report = Path(args.report)
    for name, config in TRAIN_CONFIGS.items():
        train, val, pairs = train_inputs(name)
        res = train_head(train, 3, config, val, log=None, pairs=pairs)
        torch.save({"state": res.head.state_dict(), "history": res.history, "best_epoch": res.best_epoch},
                   report / f"{name}{ctx.rank}.pt")


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score")
    s.add_argument("images")
    s.add_argument("out")
    s.add_argument("report")
    s.add_argument("--slow", type=float, default=0.0)
    c = sub.add_parser("cache")
    c.add_argument("images")
    c.add_argument("cache")
    c.add_argument("report")
    t = sub.add_parser("train")
    t.add_argument("report")
    args = p.parse_args()
    torch.set_num_threads(1)
    with process_group() as ctx:
        {"score": run_score, "cache": run_cache, "train": run_train}[args.command](args, ctx)
    # Exit without the interpreter's and C++ static teardown: a rank still ended in SIGABRT ("terminate called
    # without an active exception": a joinable std::thread destroyed, at exit as far as we can tell; not proven)
    # behind process_group()'s barrier, in 1 of 4 CI runs of test_train_ddp.py. Everything the tests read is
    # written and closed above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
