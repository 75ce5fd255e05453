"""``midlevel-fast``: command-line entry point."""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Sequence

DEMO_PHOTOS = ("chelsea", "astronaut", "coffee")


def _demo_image(name: str):
    try:
        from skimage import data
    except ImportError:
        raise SystemExit("--demo needs scikit-image: pip install 'midlevel_fast[demo]'") from None
    return getattr(data, name)()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "class"


def cmd_score(args: argparse.Namespace) -> int:
    import torch

    from midlevel_fast.io.image_io import load_image
    from midlevel_fast.model import load_model
    from midlevel_fast.io.overlay import overlay, save_png
    from midlevel_fast.scoring.score import score_image

    inputs: list[tuple[str, object]] = [(p, p) for p in args.images]
    inputs += [(f"demo:{d}", _demo_image(d)) for d in args.demo or []]
    if not inputs:
        print("error: give at least one IMAGE or --demo NAME", file=sys.stderr)
        return 2
    model = load_model(args.head, backbone=args.backbone)
    if args.threads:
        torch.set_num_threads(args.threads)
    failed = 0
    records = []
    for name, source in inputs:
        try:
            res = score_image(source, model, mode=args.mode, k=args.k, return_maps=args.top if args.maps else False,
                              batch_size=args.batch_size, window_step=args.window_step)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        top = res.top(args.top)
        records.append({"image": name, "mode": res.mode, "seconds": round(res.seconds, 3), "patches": len(res.boxes),
                        "top": [{"class": c, "score": s} for c, s in top]})
        if not args.json:
            print(f"{name}  ({res.mode}, {len(res.boxes)} patches, {res.seconds:.2f} s)")
            for c, s in top:
                print(f"  {s:8.4f}  {c}")
        if args.maps:
            pixels = load_image(source)
            stem = _slug(Path(name).stem if not name.startswith("demo:") else name)
            # The maps are the best classes in top() order; names alone can repeat (ImageNet has two "crane").
            for rank, ((cls, score), heat) in enumerate(zip(res.top(len(res.map_classes)), res.maps), 1):
                out = Path(args.maps) / f"{stem}_{rank}_{_slug(cls)}.png"
                save_png(overlay(pixels, heat, f"{cls}: {score:.3f}"), out)
                if not args.json:
                    print(f"  map -> {out}")
    if args.json:
        print(json.dumps(records, indent=2))
    return 1 if failed else 0


def _voc_cache(args: argparse.Namespace, backbone, scales, grid_step, mode: str):
    from midlevel_fast.training.cache import CacheConfig, default_cache_root, open_cache

    config = CacheConfig(backbone=backbone.name, mode=mode, scales=list(scales), grid_step=grid_step,
                         window_step=args.window_step, feature_dim=backbone.feature_dim)
    return open_cache(args.cache or default_cache_root(), config)


def _cached_split(args, backbone, caches, split: str):
    """Reads ``split`` once and fills each of ``caches`` with its images."""
    from midlevel_fast.training.cache import fill_cache
    from midlevel_fast.training.voc import load_split

    images = load_split(args.voc, split)
    for cache in caches:
        fill_cache(cache, backbone, [(im.image_id, im.path) for im in images])
    return images


def cmd_cache(args: argparse.Namespace) -> int:
    import torch

    from midlevel_fast.backbones import get_backbone
    from midlevel_fast.scoring.grid import PAPER_SCALES, PAPER_STEP

    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = get_backbone(args.backbone)
    caches = [_voc_cache(args, backbone, PAPER_SCALES, PAPER_STEP, mode) for mode in args.mode]
    for split in args.split:
        _cached_split(args, backbone, caches, split)
    for mode, cache in zip(args.mode, caches):
        cache.verify()
        print(f"{len(cache.image_ids)} images cached in {cache.root} ({mode})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from midlevel_fast.backbones import get_backbone
    from midlevel_fast.training.evaluate import format_ap_table
    from midlevel_fast.scoring.grid import PAPER_SCALES, PAPER_STEP
    from midlevel_fast.head import HeadInfo, save_head
    from midlevel_fast.training.train import TrainConfig, config_dict, eval_set, merge_patch_sets, patch_set, train_head
    from midlevel_fast.training.voc import VOC_CLASSES

    if args.consistency and not {"dense", "batched"} <= set(args.mode):
        raise SystemExit("--consistency pairs dense windows with grid crops: it needs --mode dense batched")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(layers=args.layers, hidden=args.hidden, objective=args.objective, k=args.k,
                         max_epochs=args.epochs, seed=args.seed, consistency=args.consistency)
    backbone = get_backbone(args.backbone)
    caches = [_voc_cache(args, backbone, PAPER_SCALES, PAPER_STEP, mode) for mode in args.mode]
    train_images = [im for split in args.split for im in _cached_split(args, backbone, caches, split)]
    # Validation uses the first mode's features: the mode the head is meant to score with.
    val_images = _cached_split(args, backbone, caches[:1], args.val_split) if args.val_split else None
    t0 = time.perf_counter()
    train = merge_patch_sets([patch_set(cache, train_images, VOC_CLASSES, config.bg_fraction, config.seed,
                                        config.objective) for cache in caches])
    val = eval_set(caches[0], val_images, VOC_CLASSES) if val_images else None
    pairs = None
    if config.consistency:
        from midlevel_fast.training.consistency import consistency_pairs

        pairs = consistency_pairs(caches[args.mode.index("dense")], caches[args.mode.index("batched")],
                                  [im.image_id for im in train_images])
    print(f"{len(train.features)} training patches from {len(train_images)} images "
          f"({int(train.counts[-1])} background kept)"
          + (f", {len(pairs)} dense/crop pairs" if pairs else "")
          + f", loaded in {time.perf_counter() - t0:.1f} s")
    result = train_head(train, len(VOC_CLASSES), config, val, pairs=pairs)
    info = HeadInfo(backbone=backbone.name, class_names=list(VOC_CLASSES), k=config.k, scales=list(PAPER_SCALES),
                    grid_step=PAPER_STEP, layers=config.layers, hidden=config.hidden,
                    extra={"train": config_dict(config), "mode": args.mode if len(args.mode) > 1 else args.mode[0],
                           "window_step": args.window_step, "splits": args.split,
                           "best_epoch": result.best_epoch, "val_map": result.best_map,
                           "objective": config.objective})
    save_head(args.out, result.head, info, dtype=torch.float16 if args.half else torch.float32)
    print(f"trained in {result.seconds:.1f} s, best epoch {result.best_epoch}; head written to {args.out}")
    if val is not None:
        from midlevel_fast.training.train import evaluate_head

        rows = {f"{args.val_split} {m}": evaluate_head(result.head, val, config.objective, config.k, m)[0]
                for m in ("voc2007", "voc2010")}
        print(format_ap_table(VOC_CLASSES, rows))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from midlevel_fast.training.evaluate import format_ap_table
    from midlevel_fast.model import load_model
    from midlevel_fast.training.train import eval_set, evaluate_head

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.head)
    objective = model.info.extra.get("objective", "softmax")
    cache = _voc_cache(args, model.backbone, model.info.scales, model.info.grid_step, args.mode)
    images = _cached_split(args, model.backbone, [cache], args.split)
    data = eval_set(cache, images, model.class_names)
    rows = {}
    for k in args.k or [model.info.k]:
        for method in ("voc2007", "voc2010"):
            rows[f"k={k:g} {method}"] = evaluate_head(model.head, data, objective, k, method)[0]
    print(f"{args.split}: {len(images)} images, {len(data.features)} patches ({args.mode})")
    print(format_ap_table(model.class_names, rows))
    return 0


def _add_voc_options(p: argparse.ArgumentParser, several_modes: bool = False) -> None:
    p.add_argument("--voc", required=True, help="VOCdevkit/VOC2012 directory")
    if several_modes:
        p.add_argument("--mode", nargs="+", choices=("dense", "batched"), default=["dense"],
                       help="how patch features are computed; several modes pool their patches")
    else:
        p.add_argument("--mode", choices=("dense", "batched"), default="dense", help="how patch features are computed")
    p.add_argument("--window-step", type=int, default=None, help="dense window step in trunk cells")
    p.add_argument("--cache", default=None, help="feature cache directory (default $MIDLEVEL_FAST_CACHE or "
                                                 "~/.cache/midlevel_fast)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="midlevel-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="print the top classes of images (and write heat-map overlays)")
    s.add_argument("images", nargs="*", help="image files")
    s.add_argument("--demo", action="append", choices=DEMO_PHOTOS,
                   help="score a public-domain photo bundled with scikit-image (repeatable)")
    s.add_argument("--mode", choices=("dense", "batched", "naive"), default="dense")
    s.add_argument("--top", type=int, default=5, help="how many classes to print (and map)")
    s.add_argument("--maps", metavar="DIR", help="write one heat-map overlay PNG per top class into DIR")
    s.add_argument("--head", default=None,
                   help="head file (.safetensors), or 'imagenet' for the backbone's ImageNet classifier; "
                        "default: the shipped VOC head if any, else 'imagenet'")
    s.add_argument("--backbone", default=None, help="backbone name (default: the head's, else efficientnet_lite0)")
    s.add_argument("--k", type=float, default=None, help="power-mean exponent (default: the model's, 5)")
    s.add_argument("--window-step", type=int, default=None, help="dense window step in trunk cells")
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=cmd_score)

    c = sub.add_parser("cache", help="compute and store the frozen patch features of VOC splits")
    _add_voc_options(c, several_modes=True)
    c.add_argument("--split", nargs="+", default=["train", "val"])
    c.add_argument("--backbone", default="efficientnet_lite0")
    c.set_defaults(func=cmd_cache)

    t = sub.add_parser("train", help="train an adaptation head on a VOC-style data set")
    _add_voc_options(t, several_modes=True)
    t.add_argument("--split", nargs="+", default=["train"], help="training split(s), e.g. train or train val")
    t.add_argument("--val-split", default="val", help="split for per-epoch validation mAP ('' for none)")
    t.add_argument("--backbone", default="efficientnet_lite0")
    t.add_argument("--out", required=True, help="head file to write (.safetensors)")
    t.add_argument("--layers", type=int, default=2, help="adaptation layers: 1, 2 (paper) or 3")
    t.add_argument("--hidden", type=int, default=2048)
    t.add_argument("--objective", choices=("softmax", "multilabel"), default="softmax")
    t.add_argument("--k", type=float, default=5.0, help="power-mean exponent used for validation and stored")
    t.add_argument("--epochs", type=int, default=30, help="at most this many epochs")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--consistency", type=float, default=0.0, metavar="LAMBDA",
                   help="weight of the dense/crop consistency term (not in the paper; needs --mode dense batched)")
    t.add_argument("--half", action="store_true", help="store the weights as float16")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="VOC classification AP of a head")
    _add_voc_options(e)
    e.add_argument("--split", default="val")
    e.add_argument("--head", required=True, help="head file (.safetensors)")
    e.add_argument("--k", type=float, nargs="*", help="power-mean exponents to compare (default: the head's)")
    e.set_defaults(func=cmd_eval)
    from midlevel_fast.cli.distributed import register  # score-dir, and torchrun support for cache/train
    register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
