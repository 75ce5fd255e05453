"""The commands on a VOC-style data set: ``cache`` (frozen patch features), ``train`` (an adaptation head),
``fit-boxes`` (a head's box regression), ``detector`` (a head's ROI detector,
:mod:`midlevel_fast.recipes.detector_run`) and ``eval`` (a head's AP); the procedure is
:mod:`midlevel_fast.recipes.voc_run`'s, ``cache`` and ``train`` shard under ``torchrun``. Their arguments are
declared in :mod:`midlevel_fast.cli.voc_args`."""
from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch

from midlevel_fast.backbones import Backbone, get_backbone
from midlevel_fast.cli import voc_args
from midlevel_fast.cli.common import EXIT_OK, UsageError, backbone_options, load_cli_model, refuse_weights_required
from midlevel_fast.cli.distributed import distributed
from midlevel_fast.datasets.box_samples import BOX_FORMATS, read_samples
from midlevel_fast.recipes.box_task import BOX_BATCH_SIZE, train_box_head
from midlevel_fast.training.consistency import PAIR_MODES
from midlevel_fast.metrics.average_precision import format_ap_table
from midlevel_fast.datasets.tags import TAG_FORMATS, TaggedImage, imagefolder_tags, list_tags, voc_tags
from midlevel_fast.recipes.detector_run import train_voc_detector
from midlevel_fast.recipes.tags_run import train_tagged_head
from midlevel_fast.training.detector_fit import FitSettings
from midlevel_fast.training.train import TrainConfig
from midlevel_fast.datasets.voc import VOC_CLASSES
from midlevel_fast.recipes.voc_run import (VocEvaluation, cache_voc_splits, evaluate_voc_head, fit_voc_boxes,
                                            train_voc_head)

T = TypeVar("T")


def _backbone(args: argparse.Namespace) -> Backbone:
    """``--backbone`` built with ``--weights`` (refused up front where they are needed and missing)."""
    return get_backbone(args.backbone, **backbone_options(args.backbone, args.weights))


def cmd_cache(args: argparse.Namespace) -> int:
    for cache in cache_voc_splits(args.voc, args.split, _backbone(args), args.mode, args.cache, args.window_step):
        print(f"{len(cache.image_ids)} images cached in {cache.root} ({cache.config.mode})")
    return EXIT_OK


def _read_training_splits(read: Callable[[str, str, list[str] | None], tuple[list[T], list[str]]], root: str,
                          splits: Sequence[str]) -> tuple[list[T], list[str]]:
    """The items of the training ``splits`` in order, each split read by ``read(root, split, classes)`` (``classes``
    ``None`` for the first split, then the classes it returned), and the classes; a usage error without splits."""
    items: list[T] = []
    classes: list[str] | None = None
    for split in splits:
        read_items, classes = read(root, split, classes)
        items += read_items
    if classes is None:
        raise UsageError("no --split given: the classes are read from the training splits")
    return items, classes


def _tagged_splits(args: argparse.Namespace) -> tuple[list[TaggedImage], list[TaggedImage], list[str]]:
    """Training and validation images of ``--voc`` or ``--data``/``--format`` with their tags, and the classes
    (read from the training splits)."""
    val_splits = [args.val_split] if args.val_split else []
    if args.voc:
        return ([img for split in args.split for img in voc_tags(args.voc, split)],
                [img for split in val_splits for img in voc_tags(args.voc, split)], list(VOC_CLASSES))
    read = imagefolder_tags if args.format == "imagefolder" else (
        lambda root, split, classes=None: list_tags(Path(root) / split, classes))
    train, classes = _read_training_splits(read, args.data, args.split)
    val = [img for split in val_splits for img in read(args.data, split, classes)[0]]
    return train, val, classes


def _train_boxes(args: argparse.Namespace, config: TrainConfig, dtype: torch.dtype) -> int:
    """``train --task boxes``: one square patch per labelled box of ``--data`` (``--format`` one of BOX_FORMATS)."""
    if args.voc or not args.data or args.format not in BOX_FORMATS:
        raise UsageError(f"--task boxes reads --data PATH --format {{{','.join(BOX_FORMATS)}}} (VOC Action: --data "
                         "VOC_ROOT --format voc-action)")
    if args.supervision != "boxes" or args.consistency:
        raise UsageError("--task boxes labels each box's patch: no --supervision image, no --consistency")
    train, classes = _read_training_splits(partial(read_samples, args.format), args.data, args.split)
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


def cmd_detector(args: argparse.Namespace) -> int:
    refuse_weights_required(args.head, "detector")
    for name in ("weight_decay", "ridge"):
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.passes < 0 or args.steps < 0:
        raise UsageError(f"--passes and --steps must be >= 0, got {args.passes} and {args.steps}")
    settings = FitSettings(weight_decay=args.weight_decay, passes=args.passes, ridge=args.ridge, steps=args.steps)
    info = train_voc_detector(args.head, args.voc, args.split, args.out, maps_base=args.cache, settings=settings)
    det = info.detector
    if det is None:
        raise RuntimeError(f"train_voc_detector wrote {args.out} without a detector")
    print(f"ROI detector trained on {det.description['positives']} object rows and {det.description['negatives'][-1]} "
          f"background rows of {det.description['images']} images ({'+'.join(args.split)}) in "
          f"{det.description['seconds']:.0f} s; head written to {args.out}")
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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``cache``, ``train``, ``fit-boxes`` and ``eval`` to ``subparsers`` (their arguments:
    :mod:`midlevel_fast.cli.voc_args`)."""
    voc_args.cache_parser(subparsers).set_defaults(func=distributed(cmd_cache))
    voc_args.train_parser(subparsers).set_defaults(func=distributed(cmd_train))
    voc_args.fit_boxes_parser(subparsers).set_defaults(func=cmd_fit_boxes)
    voc_args.detector_parser(subparsers).set_defaults(func=cmd_detector)
    voc_args.eval_parser(subparsers).set_defaults(func=cmd_eval)
