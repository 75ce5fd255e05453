"""The arguments of the VOC-style commands (:mod:`midlevel_fast.cli.voc`): one function per command adds its
subparser and declares its options; the command itself is set by :func:`midlevel_fast.cli.voc.register`."""
from __future__ import annotations

import argparse

from midlevel_fast.cache.feature_cache import CACHE_MODES
from midlevel_fast.cli.common import add_weights_option
from midlevel_fast.cli.distributed import add_distributed_options
from midlevel_fast.datasets.box_samples import BOX_FORMATS
from midlevel_fast.datasets.tags import TAG_FORMATS
from midlevel_fast.model.box_regression import WINDOW_FEATURES
from midlevel_fast.model.head import OBJECTIVES
from midlevel_fast.recipes.box_task import BOX_BATCH_SIZE
from midlevel_fast.training.box_regression_fit import DEFAULT_RIDGE
from midlevel_fast.training.detector_fit import FitSettings
from midlevel_fast.training.pooling import POOLINGS
from midlevel_fast.training.train import SUPERVISIONS, TrainConfig
from midlevel_fast.training.unfreeze import UNFREEZE

# What a head learns to score: objects in whole images from patches labelled by their boxes or image tags (the
# paper's object task), or given boxes from one square patch each (its action task).
TASKS: tuple[str, ...] = ("objects", "boxes")


def _add_cache_options(p: argparse.ArgumentParser) -> None:
    """Where the windows' features are cached (``--window-step``, ``--cache``) and ``--threads``."""
    p.add_argument("--window-step", type=int, default=None, help="dense window step in trunk cells")
    p.add_argument("--cache", default=None, help="feature cache directory (default $MIDLEVEL_FAST_CACHE or "
                                                 "~/.cache/midlevel_fast)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _add_voc_options(p: argparse.ArgumentParser, several_modes: bool = False, voc_required: bool = True) -> None:
    """``--voc``, ``--mode`` (one, or with ``several_modes`` several) and the cache options."""
    p.add_argument("--voc", required=voc_required, help="VOCdevkit/VOC2012 directory")
    if several_modes:
        p.add_argument("--mode", nargs="+", choices=CACHE_MODES, default=[CACHE_MODES[0]],
                       help="how patch features are computed; several modes pool their patches")
    else:
        p.add_argument("--mode", choices=CACHE_MODES, default=CACHE_MODES[0], help="how patch features are computed")
    _add_cache_options(p)


def cache_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``cache``: the splits to cache, the backbone, the distributed options."""
    c = subparsers.add_parser("cache", help="compute and store the frozen patch features of VOC splits")
    _add_voc_options(c, several_modes=True)
    c.add_argument("--split", nargs="+", default=["train", "val"],
                   help="VOC splits to cache (ImageSets/Main/<split>.txt)")
    c.add_argument("--backbone", default="efficientnet_lite0", help="backbone whose features are cached")
    add_weights_option(c)
    add_distributed_options(c)
    return c


def train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``train``: the data set and task, the supervision, the head and its schedule, the distributed options."""
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
    return t


def _add_head_fit_options(p: argparse.ArgumentParser, what: str) -> None:
    """``--voc``, ``--head``, ``--split`` and ``--out`` of a command that fits ``what`` into a head file."""
    p.add_argument("--voc", required=True, help="VOCdevkit/VOC2012 directory")
    p.add_argument("--head", required=True, help="head file (.safetensors)")
    p.add_argument("--split", nargs="+", default=["train"], help="splits whose objects it is fitted on, e.g. train "
                                                                 "val for a head trained on trainval")
    p.add_argument("--out", required=True, help=f"head file to write, with {what} (.safetensors)")


def fit_boxes_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``fit-boxes``: the head, the splits and features its box regression is fitted on, the ridge penalty."""
    b = subparsers.add_parser("fit-boxes", help="fit (or refit) a head's box regression of detections on VOC "
                                                "splits ('train' fits one already)")
    _add_head_fit_options(b, "the box regression")
    b.add_argument("--features", choices=WINDOW_FEATURES, default="layout",
                   help="layout: each window's mid-level vector and quadrant means (computes a cache of its own; "
                        "detection mAP 21.1 vs 13.4 on VOC val); mid-level: the vector alone, what train fits")
    b.add_argument("--ridge", type=float, default=DEFAULT_RIDGE, help="ridge penalty per row (default %(default)s)")
    _add_cache_options(b)
    return b


def detector_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``detector``: the head, the splits its ROI detector is trained on, the fit's settings, the maps cache."""
    d = subparsers.add_parser("detector", help="train a head's ROI detector (the detections of score in the dense "
                                               "mode) on the objects of VOC splits")
    _add_head_fit_options(d, "the detector")
    d.add_argument("--weight-decay", type=float, default=FitSettings.weight_decay,
                   help="the softmax's weight decay (default %(default)s)")
    d.add_argument("--passes", type=int, default=FitSettings.passes,
                   help="hard-negative mining passes (default %(default)s; 0: random background only)")
    d.add_argument("--ridge", type=float, default=FitSettings.ridge,
                   help="box regression ridge per row (default %(default)s)")
    d.add_argument("--steps", type=int, default=FitSettings.steps,
                   help="box regression steps at scoring time (default %(default)s; 0: no regression)")
    d.add_argument("--cache", default=None, help="trunk maps cache directory (default $MIDLEVEL_FAST_CACHE or "
                                                 "~/.cache/midlevel_fast; about 10 MB per image)")
    d.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return d


def eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``eval``: the head, the split, the power-mean exponents, the output format."""
    e = subparsers.add_parser("eval", help="VOC classification AP of a head")
    _add_voc_options(e)
    e.add_argument("--split", default="val", help="split to evaluate on")
    e.add_argument("--head", required=True, help="head file (.safetensors)")
    e.add_argument("--k", type=float, nargs="*", help="power-mean exponents to compare (default: the head's)")
    add_weights_option(e)
    e.add_argument("--json", action="store_true",
                   help="print one JSON object instead of the table: split, mode, images, patches and per (k, "
                        "method) its mAP and per-class AP (in [0, 1])")
    return e
