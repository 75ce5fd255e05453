"""The commands on a VOC-style data set: ``cache`` (frozen patch features), ``train`` (an adaptation head) and
``eval`` (a head's AP); the procedure is :mod:`midlevel_fast.recipes.voc_run`'s, ``cache`` and ``train`` shard
under ``torchrun``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from midlevel_fast.backbones import Backbone, get_backbone
from midlevel_fast.cli.common import (EXIT_OK, UsageError, add_weights_option, backbone_options, load_cli_model,
                                     refuse_weights_required)
from midlevel_fast.cli.distributed import add_distributed_options, distributed
from midlevel_fast.model.head import OBJECTIVES
from midlevel_fast.datasets.box_samples import BOX_FORMATS, read_samples
from midlevel_fast.recipes.box_task import BOX_BATCH_SIZE, train_box_head
from midlevel_fast.cache.feature_cache import CACHE_MODES
from midlevel_fast.training.consistency import PAIR_MODES
from midlevel_fast.metrics.average_precision import format_ap_table
from midlevel_fast.training.pooling import POOLINGS
from midlevel_fast.datasets.tags import TAG_FORMATS, TaggedImage, imagefolder_tags, list_tags, voc_tags
from midlevel_fast.recipes.tags_run import train_tagged_head
from midlevel_fast.training.train import SUPERVISIONS, TrainConfig
from midlevel_fast.training.unfreeze import UNFREEZE
from midlevel_fast.datasets.voc import VOC_CLASSES
from midlevel_fast.model.box_regression import REGRESSION_FEATURES
from midlevel_fast.training.box_regression_fit import DEFAULT_RIDGE
from midlevel_fast.recipes.voc_run import (VocEvaluation, cache_voc_splits, evaluate_voc_head, fit_voc_boxes,
                                            train_voc_head)


def _backbone(args: argparse.Namespace) -> Backbone:
    """``--backbone`` built with ``--weights`` (refused up front where they are needed and missing)."""
    return get_backbone(args.backbone, **backbone_options(args.backbone, args.weights))


def cmd_cache(args: argparse.Namespace) -> int:
    for cache in cache_voc_splits(args.voc, args.split, _backbone(args), args.mode, args.cache, args.window_step):
        print(f"{len(cache.image_ids)} images cached in {cache.root} ({cache.config.mode})")
    return EXIT_OK


def _tagged_splits(args: argparse.Namespace) -> tuple[list[TaggedImage], list[TaggedImage], list[str]]:
    """Training and validation images of ``--voc`` or ``--data``/``--format`` with their tags, and the classes
    (read from the training splits)."""
    val_splits = [args.val_split] if args.val_split else []
    if args.voc:
        return ([img for split in args.split for img in voc_tags(args.voc, split)],
                [img for split in val_splits for img in voc_tags(args.voc, split)], list(VOC_CLASSES))
    read = imagefolder_tags if args.format == "imagefolder" else (
        lambda root, split, classes=None: list_tags(Path(root) / split, classes))
    train, classes = [], None
    for split in args.split:
        images, classes = read(args.data, split, classes)
        train += images
    if classes is None:
        raise UsageError("no --split given: the classes are read from the training splits")
    val = [img for split in val_splits for img in read(args.data, split, classes)[0]]
    return train, val, classes


# What a head learns to score: objects in whole images from patches labelled by their boxes or image tags (the
# paper's object task), or given boxes from one square patch each (its action task).
TASKS: tuple[str, ...] = ("objects", "boxes")


def _train_boxes(args: argparse.Namespace, config: TrainConfig, dtype: torch.dtype) -> int:
    """``train --task boxes``: one square patch per labelled box of ``--data`` (``--format`` one of BOX_FORMATS)."""
    if args.voc or not args.data or args.format not in BOX_FORMATS:
        raise UsageError(f"--task boxes reads --data PATH --format {{{','.join(BOX_FORMATS)}}} (VOC Action: --data "
                         "VOC_ROOT --format voc-action)")
    if args.supervision != "boxes" or args.consistency:
        raise UsageError("--task boxes labels each box's patch: no --supervision image, no --consistency")
    train, classes = [], None
    for split in args.split:
        samples, classes = read_samples(args.format, args.data, split, classes)
        train += samples
    if classes is None:
        raise UsageError("no --split given: the classes are read from the training splits")
    val = read_samples(args.format, args.data, args.val_split, classes)[0] if args.val_split else []
    run = train_box_head(train, classes, args.out, val, _backbone(args), config, args.context, args.cache, dtype,
                         {"data": args.format, "splits": list(args.split)})
    print(f"trained in {run.result.seconds:.1f} s on {run.samples} boxes (one {args.context:g}x square patch each"
          f"{', top unfrozen' if config.unfreeze == 'top' else ''}), best epoch {run.result.best_epoch}; head written "
          f"to {args.out}")
    if run.val is not None:
        print(format_ap_table(classes, {f"{args.val_split} AP": run.val.ap}))
        print(f"{args.val_split}: {run.val.n} boxes, mAP {100 * run.val.map:.1f} %, accuracy "
              f"{100 * run.val.accuracy:.1f} %, log-loss {run.val.log_loss:.3f}")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    batch = args.batch_size or (BOX_BATCH_SIZE if args.task == "boxes" else TrainConfig.batch_size)
    config = TrainConfig(layers=args.layers, hidden=args.hidden, objective=args.objective, k=args.k,
                         max_epochs=args.epochs, seed=args.seed, consistency=args.consistency,
                         supervision=args.supervision, pooling=args.pooling, unfreeze=args.unfreeze,
                         batch_size=batch)
    dtype = torch.float16 if args.half else torch.float32
    if args.task == "boxes":
        return _train_boxes(args, config, dtype)
    if args.unfreeze != "none":
        raise UsageError("--unfreeze top trains one patch per box: use it with --task boxes")
    if args.data and args.format not in TAG_FORMATS[1:]:
        raise UsageError(f"--format {args.format} gives boxes: train on them with --task boxes")
    if bool(args.voc) == bool(args.data):
        raise UsageError("give the data set as --voc VOC_ROOT or as --data PATH --format {imagefolder,list}")
    if args.consistency and not set(PAIR_MODES) <= set(args.mode):
        raise UsageError(f"--consistency pairs dense windows with grid crops: it needs --mode {' '.join(PAIR_MODES)}")
    if args.supervision == "image":
        if len(args.mode) != 1:
            raise UsageError("--supervision image pools the windows of one --mode (dense: the 2015 paper's)")
        train, val, classes = _tagged_splits(args)
        source = {"data": "voc" if args.voc else args.format, "splits": list(args.split)}
        run = train_tagged_head(train, classes, args.out, val, _backbone(args), args.mode[0], config, args.cache,
                                dtype, source)
        print(f"trained in {run.result.seconds:.1f} s on {run.images} images' labels ({config.pooling} pooling), "
              f"best epoch {run.result.best_epoch}; head written to {args.out}")
        if run.val_ap:
            print(format_ap_table(classes, {f"{args.val_split} {m}": ap for m, ap in run.val_ap.items()}))
        return EXIT_OK
    if args.data:
        raise UsageError("--data/--format give image labels: train on them with --supervision image, or boxes to "
                         "classify: --task boxes (objects with box supervision read VOC annotations, --voc)")
    voc = train_voc_head(args.voc, args.out, args.split, args.val_split, _backbone(args), args.mode, config,
                         args.cache, args.window_step, dtype=dtype)
    print(f"trained in {voc.result.seconds:.1f} s, best epoch {voc.result.best_epoch}; head written to {args.out}")
    if voc.val_ap:
        print(format_ap_table(voc.info.class_names, {f"{args.val_split} {m}": ap for m, ap in voc.val_ap.items()}))
    return EXIT_OK


def cmd_fit_boxes(args: argparse.Namespace) -> int:
    refuse_weights_required(args.head, "fit-boxes")
    info = fit_voc_boxes(args.head, args.voc, args.split, args.out, args.ridge, args.cache, args.window_step,
                         args.features)
    reg = info.box_regression
    if reg is None:
        raise RuntimeError(f"fit_voc_boxes wrote {args.out} without a box regression")
    rows = sum(reg.description["rows"])
    kept = [info.class_names[c] for c in reg.description["identity_classes"]]
    print(f"box regression ({args.features} features) fitted on {rows} positive windows of {'+'.join(args.split)}; "
          f"head written to {args.out}"
          + (f" (too few windows, boxes kept as windows for: {', '.join(kept)})" if kept else ""))
    return EXIT_OK


def eval_record(split: str, mode: str, class_names: list[str], ev: VocEvaluation) -> dict:
    """``eval --json``'s object: ``split``, ``mode``, ``images``, ``patches`` and ``results``, one per (k, method)
    measured: ``k``, ``method``, ``ap`` (per class name, in [0, 1]; null for a class without positives in the split)
    and ``map`` (their mean over the classes with an AP, as the table's; null if none has one)."""
    results = []
    for (k, method), ap in ev.ap.items():
        defined = ap[~np.isnan(ap)]
        results.append({"k": k, "method": method, "map": float(defined.mean()) if len(defined) else None,
                        "ap": {name: None if np.isnan(v) else float(v) for name, v in zip(class_names, ap)}})
    return {"split": split, "mode": mode, "images": ev.images, "patches": ev.patches, "results": results}


def cmd_eval(args: argparse.Namespace) -> int:
    model = load_cli_model(args.head, None, args.weights)
    ev = evaluate_voc_head(model, args.voc, args.split, args.mode, args.k, args.cache, args.window_step)
    if args.json:
        print(json.dumps(eval_record(args.split, args.mode, model.class_names, ev), allow_nan=False))
        return EXIT_OK
    print(f"{args.split}: {ev.images} images, {ev.patches} patches ({args.mode})")
    print(format_ap_table(model.class_names, {f"k={k:g} {method}": ap for (k, method), ap in ev.ap.items()}))
    return EXIT_OK


def _add_voc_options(p: argparse.ArgumentParser, several_modes: bool = False, voc_required: bool = True) -> None:
    p.add_argument("--voc", required=voc_required, help="VOCdevkit/VOC2012 directory")
    if several_modes:
        p.add_argument("--mode", nargs="+", choices=CACHE_MODES, default=[CACHE_MODES[0]],
                       help="how patch features are computed; several modes pool their patches")
    else:
        p.add_argument("--mode", choices=CACHE_MODES, default=CACHE_MODES[0], help="how patch features are computed")
    p.add_argument("--window-step", type=int, default=None, help="dense window step in trunk cells")
    p.add_argument("--cache", default=None, help="feature cache directory (default $MIDLEVEL_FAST_CACHE or "
                                                 "~/.cache/midlevel_fast)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``cache``, ``train``, ``fit-boxes`` and ``eval`` to ``subparsers``."""
    c = subparsers.add_parser("cache", help="compute and store the frozen patch features of VOC splits")
    _add_voc_options(c, several_modes=True)
    c.add_argument("--split", nargs="+", default=["train", "val"],
                   help="VOC splits to cache (ImageSets/Main/<split>.txt)")
    c.add_argument("--backbone", default="efficientnet_lite0", help="backbone whose features are cached")
    add_weights_option(c)
    add_distributed_options(c)
    c.set_defaults(func=distributed(cmd_cache))

    t = subparsers.add_parser("train", help="train an adaptation head on a VOC-style data set, from image labels, "
                                            "or on given boxes (--task boxes)")
    _add_voc_options(t, several_modes=True, voc_required=False)
    t.add_argument("--task", choices=TASKS, default=TASKS[0],
                   help="objects: score whole images from multi-scale patches (the paper's object task); boxes: "
                        "classify given boxes from one square patch each (its action task)")
    t.add_argument("--data", default=None, help="image-labelled data (--supervision image) or labelled boxes "
                                                "(--task boxes): an ImageFolder root (root/<split>/<class>/<image>), "
                                                "a folder of list files, a VOC root (voc-action)")
    t.add_argument("--format", choices=sorted(set(TAG_FORMATS[1:]) | set(BOX_FORMATS)), default="imagefolder",
                   help="layout of --data; list (image labels): each split is a CSV ('path,label1;label2') or JSON "
                        "list file under --data; csv, coco (boxes): the split's file under --data "
                        "(<split>.csv: path,x0,y0,x1,y1,label; <split>.json: COCO); voc-action: "
                        "ImageSets/Action/<split>.txt; imagefolder: the whole image is the box")
    t.add_argument("--unfreeze", choices=UNFREEZE, default=UNFREEZE[0],
                   help="with --task boxes, top: also train the backbone's last block (Lite0: its last stage and "
                        "head conv; AlexNet: FC6) at a tenth of the learning rate (the paper's 'U' rows)")
    t.add_argument("--context", type=float, default=1.0,
                   help="with --task boxes: the square patch's side over the box's longer side")
    t.add_argument("--split", nargs="+", default=["train"], help="training split(s), e.g. train or train val "
                                                                 "(list format: list files under --data)")
    t.add_argument("--val-split", default="val", help="split for per-epoch validation mAP ('' for none)")
    t.add_argument("--supervision", choices=SUPERVISIONS, default=SUPERVISIONS[0],
                   help="boxes: each patch labelled from the boxes (the paper); image: only each image's classes, "
                        "window probabilities pooled per image (Oquab et al. 2015)")
    t.add_argument("--pooling", choices=POOLINGS, default=POOLINGS[0],
                   help="with --supervision image: how an image's windows pool per class (power-mean takes --k)")
    t.add_argument("--backbone", default="efficientnet_lite0", help="backbone the head is trained on")
    add_weights_option(t)
    t.add_argument("--out", required=True, help="head file to write (.safetensors)")
    t.add_argument("--layers", type=int, default=2, help="adaptation layers: 1, 2 (paper) or 3")
    t.add_argument("--hidden", type=int, default=2048, help="units of each hidden adaptation layer (FCa)")
    t.add_argument("--objective", choices=OBJECTIVES, default=OBJECTIVES[0],
                   help="softmax over classes + background (the paper) or per-class sigmoids")
    t.add_argument("--k", type=float, default=5.0, help="power-mean exponent used for validation and stored")
    t.add_argument("--epochs", type=int, default=30, help="at most this many epochs")
    t.add_argument("--batch-size", type=int, default=None,
                   help=f"rows per SGD step (default {TrainConfig.batch_size}; {BOX_BATCH_SIZE} with --task boxes)")
    t.add_argument("--seed", type=int, default=0, help="seed of background sampling, init and batches")
    t.add_argument("--consistency", type=float, default=0.0, metavar="LAMBDA",
                   help="weight of the dense/crop consistency term (not in the paper; needs --mode dense batched)")
    t.add_argument("--half", action="store_true", help="store the weights as float16")
    add_distributed_options(t)
    t.set_defaults(func=distributed(cmd_train))

    b = subparsers.add_parser("fit-boxes", help="fit (or refit) a head's box regression of detections on VOC "
                                                "splits ('train' fits one already)")
    b.add_argument("--voc", required=True, help="VOCdevkit/VOC2012 directory")
    b.add_argument("--head", required=True, help="head file (.safetensors)")
    b.add_argument("--split", nargs="+", default=["train"], help="splits whose objects it is fitted on, e.g. train "
                                                                 "val for a head trained on trainval")
    b.add_argument("--features", choices=REGRESSION_FEATURES, default="layout",
                   help="layout: each window's mid-level vector and quadrant means (computes a cache of its own; "
                        "detection mAP 21.1 vs 13.4 on VOC val); mid-level: the vector alone, what train fits")
    b.add_argument("--ridge", type=float, default=DEFAULT_RIDGE, help="ridge penalty per row (default %(default)s)")
    b.add_argument("--out", required=True, help="head file to write, with the box regression (.safetensors)")
    b.add_argument("--window-step", type=int, default=None, help="dense window step in trunk cells")
    b.add_argument("--cache", default=None, help="feature cache directory (default $MIDLEVEL_FAST_CACHE or "
                                                 "~/.cache/midlevel_fast)")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    b.set_defaults(func=cmd_fit_boxes)

    e = subparsers.add_parser("eval", help="VOC classification AP of a head")
    _add_voc_options(e)
    e.add_argument("--split", default="val", help="split to evaluate on")
    e.add_argument("--head", required=True, help="head file (.safetensors)")
    e.add_argument("--k", type=float, nargs="*", help="power-mean exponents to compare (default: the head's)")
    add_weights_option(e)
    e.add_argument("--json", action="store_true",
                   help="print one JSON object instead of the table: split, mode, images, patches and per (k, "
                        "method) its mAP and per-class AP (in [0, 1])")
    e.set_defaults(func=cmd_eval)
