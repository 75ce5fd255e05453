"""``midlevel-fast``: command-line entry point."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Sequence

DEMO_PHOTOS = ("chelsea", "astronaut", "coffee", "motorcycle_left")


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

    from midlevel_fast.image_io import load_image
    from midlevel_fast.model import load_model
    from midlevel_fast.overlay import overlay, save_png
    from midlevel_fast.score import score_image

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
                              batch_size=args.batch_size, q=args.q)
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
            for rank, (cls, heat) in enumerate(zip(res.map_classes, res.maps), 1):
                score = float(res.scores[res.class_names.index(cls)])
                out = Path(args.maps) / f"{stem}_{rank}_{_slug(cls)}.png"
                save_png(overlay(pixels, heat, f"{cls}: {score:.3f}"), out)
                if not args.json:
                    print(f"  map -> {out}")
    if args.json:
        print(json.dumps(records, indent=2))
    return 1 if failed else 0


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
    s.add_argument("--q", type=int, default=None, help="dense window step in trunk cells")
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=cmd_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
