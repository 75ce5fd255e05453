"""The ``score`` command (images or demo photos, printed as a table or JSON Lines) and the options it shares with
``score-dir`` (:mod:`midlevel_fast.cli.score_dir`): the model, how it scores, the maps."""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections import Counter
from pathlib import Path
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from midlevel_fast.cli.common import EXIT_FAILED, EXIT_OK, UsageError, add_weights_option, load_cli_model
from midlevel_fast.io.image_io import load_image
from midlevel_fast.viz.overlay import PRESENT, chosen_maps, map_stems, write_maps
from midlevel_fast.runtime.precision import PRECISIONS
from midlevel_fast.scoring.result import ScoreResult
from midlevel_fast.scoring.options import MODES, ScoreOptions
from midlevel_fast.scoring.score import score_image

log = logging.getLogger(__name__)

# Public-domain photos of scikit-image; "cat_motorbike" is two of them side by side (chelsea the cat and the left view
# of the stereo motorcycle, at the cat's height): a scene with two VOC classes, each in its own half.
DEMO_PHOTOS = ("cat_motorbike", "chelsea", "astronaut", "coffee")
# score prints the present classes, or this many best by score when none is present (or without calibration).
DEFAULT_SHOWN = 3
# Points (the maps they come from) are computed for at most this many classes per image, the best by score, where
# every class may be shown (--all, --json) or present (a calibrated head): all of VOC's 20, not 1000 ImageNet maps.
MAX_POINTS = 50
# The commands report the boxes a person would act on: windows whose class probability is at least this (the Python
# API keeps every candidate from 0.05 up, what detection AP is measured on; the CLI's --box-score 0.05 gives those).
BOX_SCORE = 0.5


def _demo_image(name: str) -> np.ndarray:
    # scikit-image is optional (the [demo] extra): imported only when a demo photo is asked for.
    try:
        from skimage import data
    except ImportError:
        raise UsageError("--demo needs scikit-image: pip install 'midlevel_fast[demo]'") from None
    if name != "cat_motorbike":
        return getattr(data, name)()
    cat = data.chelsea()
    bike = Image.fromarray(data.stereo_motorcycle()[0])
    height = cat.shape[0]
    bike = bike.resize((round(bike.width * height / bike.height), height), Image.Resampling.LANCZOS)
    return np.concatenate([cat, np.asarray(bike)], axis=1)


def _probability(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text}")
    return value


def shown_classes(res: ScoreResult, show_all: bool = False, top: int = DEFAULT_SHOWN) -> list[int]:
    """The classes ``score`` prints, best score first: every class with ``show_all``; else the present ones
    (presence >= :data:`midlevel_fast.viz.overlay.PRESENT`); else (none present, or no calibration) the ``top``
    best by score."""
    order = torch.sort(res.scores, descending=True, stable=True).indices.tolist()
    if show_all:
        return order
    if res.presence is not None:
        present = [i for i in order if float(res.presence[i]) >= PRESENT]
        if present:
            return present
    return order[:top]


def format_result(name: str, res: ScoreResult, classes: Sequence[int]) -> list[str]:
    """The lines ``score`` prints for one image: the headline, then per class of ``classes`` its presence
    (``97.3 %``, ``n/a`` without calibration), score (scientific notation), name, point (the pixel it is in,
    ``-`` when it was not computed) and number of detection boxes."""
    lines = [f"{name}  ({res.mode}, {len(res.windows)} patches, {res.seconds:.2f} s)"]
    if res.presence is not None and not any(float(res.presence[c]) >= PRESENT for c in classes):
        lines.append(f"  no class present (P >= {100 * PRESENT:g} %); the best by score:")
    boxes = Counter(d.label for d in res.detections)
    width = max((len(res.class_names[c]) for c in classes), default=0)
    for c in classes:
        cls = res.class_names[c]
        presence = "n/a" if res.presence is None else f"{100 * float(res.presence[c]):.1f} %"
        p = res.points.get(cls)
        at = "-" if p is None else f"({math.floor(p[0])}, {math.floor(p[1])})"
        n = boxes[cls]
        lines.append(f"  {presence:>7}  {float(res.scores[c]):.1e}  {cls:<{width}}  at {at}  "
                     f"{n} box{'' if n == 1 else 'es'}")
    return lines


def _map_names(names: Sequence[str]) -> dict[str, str]:
    """The map stems of ``score``'s inputs: after the file name (the demo photo's name), or after the path as
    given where two inputs share a file name (:func:`midlevel_fast.viz.overlay.map_stems` keeps them apart)."""
    files = [n if n.startswith("demo:") else Path(n).name for n in names]
    count = Counter(files)
    keyed = {n: f if count[f] == 1 else n for n, f in zip(names, files)}
    stems = map_stems(list(dict.fromkeys(keyed.values())))
    return {n: stems[k] for n, k in keyed.items()}


# What one image of ``score`` may fail with: reported, the other images still scored.
IMAGE_ERRORS = (ValueError, OSError, RuntimeError, MemoryError)


def _image_error(name: str, e: BaseException) -> str:
    """The message of an image ``score`` could not score: the error, prefixed with the image unless it names it."""
    text = str(e) or type(e).__name__
    return f"{text if name in text else f'{name}: {text}'} (skipped; the other images are scored)"


def _emit(line: str) -> None:
    # Flushed per image, so what was scored is out even when a later image stops the run.
    print(line, flush=True)


def checked_options(args: argparse.Namespace) -> ScoreOptions:
    """The scoring options of ``score`` and ``score-dir``, checked before the model loads (a usage error names the
    option)."""
    try:
        return ScoreOptions(mode=args.mode, k=args.k, window_step=args.window_step, precision=args.precision,
                            detection_threshold=args.box_score, batch_size=args.batch_size)
    except ValueError as e:
        raise UsageError(f"{e}") from e


def cmd_score(args: argparse.Namespace) -> int:
    """``score``: exit status EXIT_OK, EXIT_FAILED when some image could not be scored (each is reported on standard
    error, and with ``--json`` as a line of its own; the others are scored), EXIT_USAGE on a usage error."""
    if args.maps_for is not None and not args.maps:
        raise UsageError("--maps-for needs --maps DIR")
    if not args.images and not args.demo:
        raise UsageError("give at least one IMAGE or --demo NAME")
    options = checked_options(args)
    inputs: list[tuple[str, object]] = [(p, p) for p in args.images]
    inputs += [(f"demo:{d}", _demo_image(d)) for d in args.demo or []]
    model = load_cli_model(args.head, args.backbone, args.weights)
    cal = model.info.calibration
    calibrated = cal is not None and float(cal.k) == float(model.info.k if args.k is None else args.k)
    # Maps (and so points) of the classes that may be printed or mapped: which are present is known only after
    # scoring, so with a calibration (and for --all, --json) the MAX_POINTS best.
    n_maps = max(args.top, MAX_POINTS if calibrated or args.all or args.json else 0)
    if args.maps:
        n_maps = max(n_maps, args.maps_for or 1)
    stems = _map_names([name for name, _ in inputs])
    failed = scored = 0
    for name, source in inputs:
        try:
            res = score_image(source, model, **replace(options, return_maps=max(n_maps, 1)).as_kwargs())
            files = (write_maps(load_image(source), res, args.maps, stems[name], chosen_maps(res, args.maps_for))
                     if args.maps else None)
        except IMAGE_ERRORS as e:
            message = _image_error(name, e)
            print(f"error: {message}", file=sys.stderr, flush=True)
            if args.json:
                _emit(json.dumps({"image": name, "error": message}))
            failed += 1
            continue
        scored += 1
        if args.json:
            record = {"image": name, **res.to_dict()}
            if files is not None:
                record["maps"] = files
            _emit(json.dumps(record))
            continue
        lines = format_result(name, res, shown_classes(res, args.all, args.top))
        if files is not None:
            lines += [f"  map -> {Path(args.maps) / file}" for file in files]
            if not files:
                lines.append("  no map: no class present (--maps-for N maps the N best)")
        _emit("\n".join(lines))
    if scored and not calibrated and not args.json:
        log.info("presence n/a: the head has no calibration (midlevel-fast calibrate makes one)")
    return EXIT_FAILED if failed else EXIT_OK


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def add_scoring_options(p: argparse.ArgumentParser, top_help: str, threads_help: str, top_default: int) -> None:
    """The options ``score`` and ``score-dir`` share: the model, how it scores, the maps."""
    p.add_argument("--maps", metavar="DIR",
                   help="write heat-map overlay PNGs (fixed 0-1 probability scale, with the point and boxes) into "
                        "DIR, named IMAGESTEM_RANK_CLASS.png: one per present class (presence >= 50 %%), or of the "
                        "best class when the head has no calibration")
    p.add_argument("--mode", choices=MODES, default="dense",
                   help="dense: trunk once per scale, sliding window (fast, default); batched: the paper's grid "
                        "patches cropped and resized; naive: the per-patch PIL loop (slow reference)")
    p.add_argument("--top", type=positive_int, default=top_default, help=top_help)
    p.add_argument("--head", default=None,
                   help="head file (.safetensors), or 'imagenet' for the backbone's ImageNet classifier; "
                        "default: the shipped VOC head if any, else 'imagenet'")
    p.add_argument("--backbone", default=None, help="backbone name (default: the head's, else efficientnet_lite0)")
    add_weights_option(p)
    p.add_argument("--k", type=float, default=None, help="power-mean exponent (default: the model's, 5)")
    p.add_argument("--window-step", type=int, default=None, help="dense window step in trunk cells")
    p.add_argument("--box-score", type=_probability, default=BOX_SCORE, metavar="P",
                   help=f"report detection boxes whose class probability is at least P (default {BOX_SCORE}; 0.05 "
                        "gives every candidate, as detection AP is measured)")
    p.add_argument("--batch-size", type=int, default=None, help="patches or windows per forward")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="trunk precision: auto (bf16 for the dense and batched modes on CPUs with native bf16, "
                        "AVX512-BF16 or AMX; else fp32), fp32, bf16, or int8 (EfficientNet-Lite0 on the CPU)")
    p.add_argument("--threads", type=int, default=None, help=threads_help)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``score`` to ``subparsers``."""
    s = subparsers.add_parser("score", help="print the classes present in images, their points and boxes (and write "
                                            "heat-map overlays)")
    s.add_argument("images", nargs="*", help="image files")
    s.add_argument("--demo", action="append", choices=DEMO_PHOTOS,
                   help="score a public-domain photo bundled with scikit-image (repeatable)")
    add_scoring_options(s, f"how many classes to print, best by score, when none is present or the head has no "
                           f"calibration (default {DEFAULT_SHOWN})", "torch CPU threads", DEFAULT_SHOWN)
    s.add_argument("--all", action="store_true", help="print every class, best score first")
    s.add_argument("--maps-for", type=positive_int, metavar="N", default=None,
                   help="with --maps: write the maps of the N best classes by score, present or not")
    s.add_argument("--json", action="store_true",
                   help="print JSON Lines instead, one object per image as soon as it is scored: image, width, "
                        "height, mode, k, patches, classes (every class, best first: class, score, presence or "
                        "null, point or null), detections (class, score, box), seconds, and with --maps the map "
                        "files (score-dir's rows have the same keys); an image that could not be scored gets "
                        "{\"image\", \"error\"} (and its error on standard error)")
    s.set_defaults(func=cmd_score)

