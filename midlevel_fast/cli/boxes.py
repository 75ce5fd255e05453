"""``score-boxes``: the class of each given box of an image from one square patch (``score_boxes``), printed as a
table or JSON."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from midlevel_fast.cli.common import EXIT_OK, UsageError, add_weights_option, load_cli_model
from midlevel_fast.io.text_input import read_user_json
from midlevel_fast.ops.crop_resize import PADDING_MODES
from midlevel_fast.scoring.boxes import BoxScores, score_boxes

# Classes printed per box, most probable first.
SHOWN = 3


def _box(text: str) -> list[float]:
    """An argparse type: ``x0,y0,x1,y1``."""
    parts = text.split(",")
    try:
        box = [float(p) for p in parts]
    except ValueError:
        box = []
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"a box is x0,y0,x1,y1 (four numbers, pixels), got {text!r}")
    return box


def read_boxes_file(path: str | Path) -> list[list[float]]:
    """Boxes from a JSON file: a list of ``[x0, y0, x1, y1]``, or of objects with a ``"box"`` entry (what
    ``score --json`` writes under ``detections``). ``ValueError`` naming the file and the entry."""
    p = Path(path)
    data = read_user_json(p, f"--boxes-file {p}")
    if not isinstance(data, list) or not data:
        raise ValueError(f"--boxes-file {p}: expected a non-empty JSON list of boxes [x0, y0, x1, y1]")
    boxes = []
    for i, entry in enumerate(data):
        box = entry.get("box") if isinstance(entry, dict) else entry
        if not (isinstance(box, list) and len(box) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
            raise ValueError(f"--boxes-file {p}: entry {i} is not a box [x0, y0, x1, y1] (or {{\"box\": [...]}}): "
                             f"{entry!r}")
        boxes.append([float(v) for v in box])
    return boxes


def format_box_scores(result: BoxScores, given: list[list[float]], shown: int = SHOWN,
                      background: bool = False) -> str:
    """One line per box: the box as given, then its ``shown`` most probable classes with their probabilities, and
    with ``background`` (a softmax head with a background output) the probability left to the background."""
    lines = []
    for box, row in zip(given, result.probs):
        best = row.argsort(descending=True)[:shown].tolist()
        classes = "  ".join(f"{100 * float(row[c]):5.1f} % {result.class_names[c]}" for c in best)
        rest = f"  (background {100 * max(0.0, 1 - float(row.sum())):.1f} %)" if background else ""
        lines.append(f"  [{', '.join(f'{v:g}' for v in box)}]  {classes}{rest}")
    return "\n".join(lines)


def cmd_score_boxes(args: argparse.Namespace) -> int:
    """``score-boxes``: exit status EXIT_OK; a usage error or a bad image or boxes file raises (main: EXIT_USAGE)."""
    if bool(args.boxes) == bool(args.boxes_file):
        raise UsageError("give the boxes as --boxes x0,y0,x1,y1 [...] or as --boxes-file boxes.json")
    given = args.boxes or read_boxes_file(args.boxes_file)
    model = load_cli_model(args.head, args.backbone, args.weights)
    result = score_boxes(args.image, given, model, square=not args.no_square, padding_mode=args.padding,
                         context=args.context)
    if args.json:
        rows = [{"box": box, "patch": patch, "classes": [
            {"class": c, "probability": float(p),
             "presence": None if result.presence is None else float(result.presence[i, j])}
            for j, (c, p) in enumerate(zip(result.class_names, result.probs[i].tolist()))]}
            for i, (box, patch) in enumerate(zip(given, result.boxes.tolist()))]
        print(json.dumps({"image": args.image, "boxes": rows}))
    else:
        print(f"{args.image}  ({len(given)} box{'' if len(given) == 1 else 'es'})")
        softmax = model.info.background and model.info.extra.get("objective", "softmax") == "softmax"
        print(format_box_scores(result, given, args.top, softmax))
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``score-boxes`` to ``subparsers``."""
    b = subparsers.add_parser("score-boxes", help="classify given boxes of an image, one square patch each (e.g. "
                                                  "the action of a person whose box is known)")
    b.add_argument("image", help="image file")
    b.add_argument("--boxes", nargs="+", type=_box, metavar="x0,y0,x1,y1",
                   help="boxes in pixels (one whose x0 is negative: --boxes=-3,0,50,20, or use --boxes-file)")
    b.add_argument("--boxes-file", default=None, help="JSON list of [x0, y0, x1, y1] (or {\"box\": [...]})")
    b.add_argument("--head", default=None, help="head file (.safetensors, e.g. from train --task boxes); 'imagenet' "
                                                "for the ImageNet classes; default: the shipped VOC head")
    b.add_argument("--backbone", default=None, help="backbone (default: the head's)")
    add_weights_option(b)
    b.add_argument("--context", type=float, default=1.0, help="the square's side over the box's longer side")
    b.add_argument("--no-square", action="store_true", help="crop the box itself (scaled by --context), "
                                                            "squashed to the square input")
    b.add_argument("--padding", choices=PADDING_MODES, default="reflect",
                   help="how the patch is filled outside the image (reflect: mirrored, the paper's)")
    b.add_argument("--top", type=int, default=SHOWN, help="classes printed per box")
    b.add_argument("--json", action="store_true", help="print JSON on one line (JSON Lines, as score --json): the "
                                                        "image and per box its patch and every class's probability")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    b.set_defaults(func=cmd_score_boxes)
