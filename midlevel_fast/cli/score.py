"""The scoring commands: ``score`` (images or demo photos, printed as a table or JSON) and ``score-dir`` (a
directory into JSON Lines or Parquet, resumable, sharded under ``torchrun``)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from midlevel_fast.cli.distributed import add_distributed_options, distributed
from midlevel_fast.io.image_io import load_image
from midlevel_fast.io.overlay import write_maps
from midlevel_fast.model import load_model
from midlevel_fast.scaleout.collection import score_collection
from midlevel_fast.scaleout.results import output_paths
from midlevel_fast.scoring.score import MODES, score_image

DEMO_PHOTOS = ("chelsea", "astronaut", "coffee")


def _demo_image(name: str) -> np.ndarray:
    # scikit-image is optional (the [demo] extra): imported only when a demo photo is asked for.
    try:
        from skimage import data
    except ImportError:
        raise SystemExit("--demo needs scikit-image: pip install 'midlevel_fast[demo]'") from None
    return getattr(data, name)()


def cmd_score(args: argparse.Namespace) -> int:
    """``score``: exit status 0, 1 when some image could not be scored (each is reported), 2 without input."""
    inputs: list[tuple[str, object]] = [(p, p) for p in args.images]
    inputs += [(f"demo:{d}", _demo_image(d)) for d in args.demo or []]
    if not inputs:
        print("error: give at least one IMAGE or --demo NAME", file=sys.stderr)
        return 2
    model = load_model(args.head, backbone=args.backbone)
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
            # Maps are named after the file (or the demo photo), as score-dir names them after the relative path.
            key = name if name.startswith("demo:") else Path(name).name
            for file in write_maps(load_image(source), res.maps, res.top(len(res.map_classes)), args.maps, key):
                if not args.json:
                    print(f"  map -> {Path(args.maps) / file}")
    if args.json:
        print(json.dumps(records, indent=2))
    return 1 if failed else 0


def cmd_score_dir(args: argparse.Namespace) -> int:
    """``score-dir``: exit status 0 when the run completes (unreadable images are listed, not fatal)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = load_model(args.head, backbone=args.backbone)
    res = score_collection(args.dir, args.out, model, mode=args.mode, k=args.k, top=args.top,
                           full_scores=args.full_scores, maps_dir=args.maps, batch_size=args.batch_size,
                           window_step=args.window_step, num_workers=args.workers, progress=not args.no_progress)
    print(f"scored {res.scored} images ({res.images_per_second:.2f} images/s), {res.resumed} already done, "
          f"{res.failed} failed", file=sys.stderr)
    if res.rows is not None:
        errors = f"; {res.errors} unreadable images listed in {output_paths(res.out)[1]}" if res.errors else ""
        print(f"{res.rows} rows in {res.out}{errors}", file=sys.stderr)
    return 0


def _add_scoring_options(p: argparse.ArgumentParser, top_help: str, threads_help: str) -> None:
    """The options ``score`` and ``score-dir`` share: the model, how it scores, the maps."""
    p.add_argument("--maps", metavar="DIR", help="write one heat-map overlay PNG per top class into DIR")
    p.add_argument("--mode", choices=MODES, default="dense",
                   help="dense: trunk once per scale, sliding window (fast, default); batched: the paper's grid "
                        "patches cropped and resized; naive: the per-patch PIL loop (slow reference)")
    p.add_argument("--top", type=int, default=5, help=top_help)
    p.add_argument("--head", default=None,
                   help="head file (.safetensors), or 'imagenet' for the backbone's ImageNet classifier; "
                        "default: the shipped VOC head if any, else 'imagenet'")
    p.add_argument("--backbone", default=None, help="backbone name (default: the head's, else efficientnet_lite0)")
    p.add_argument("--k", type=float, default=None, help="power-mean exponent (default: the model's, 5)")
    p.add_argument("--window-step", type=int, default=None, help="dense window step in trunk cells")
    p.add_argument("--batch-size", type=int, default=None, help="patches or windows per forward")
    p.add_argument("--threads", type=int, default=None, help=threads_help)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``score`` and ``score-dir`` to ``subparsers``."""
    s = subparsers.add_parser("score", help="print the top classes of images (and write heat-map overlays)")
    s.add_argument("images", nargs="*", help="image files")
    s.add_argument("--demo", action="append", choices=DEMO_PHOTOS,
                   help="score a public-domain photo bundled with scikit-image (repeatable)")
    _add_scoring_options(s, "how many classes to print (and map)", "torch CPU threads")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=cmd_score)

    d = subparsers.add_parser("score-dir", help="score every image of a directory into JSON Lines or Parquet "
                                                "(resumable; shards across ranks under torchrun)")
    d.add_argument("dir", help="directory searched recursively for images")
    d.add_argument("--out", required=True, help="output file, .jsonl or .parquet (Parquet needs pyarrow)")
    _add_scoring_options(d, "classes per row (and maps per image)", "torch CPU threads per rank")
    d.add_argument("--full-scores", action="store_true", help="also store the score of every class")
    d.add_argument("--workers", type=int, default=2, help="decoding processes per rank (0: decode in-process)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_distributed_options(d)
    d.set_defaults(func=distributed(cmd_score_dir))
