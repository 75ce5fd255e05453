"""Smoke test of ``score_boxes`` on real VOC XML: every non-difficult person box of VOC val, one square
mirror-padded patch each, classified by the shipped object head; the share whose most probable class is "person".

    python -m experiments.voc_person_boxes [--voc ROOT] [--context 1.0]

The shipped head was trained on VOC trainval, so val is not held out here: this checks the reader, the square
patches and the scoring on real annotations, not generalisation.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

from midlevel_fast.model.classifier import default_model
from midlevel_fast.scoring.boxes import score_boxes
from midlevel_fast.datasets.voc import load_split
from tests.helpers import experiment_voc_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", default=None)
    parser.add_argument("--split", default="val")
    parser.add_argument("--context", type=float, default=1.0)
    args = parser.parse_args()
    model = default_model()
    best: Counter[str] = Counter()
    t0 = time.perf_counter()
    images = 0
    for img in load_split(experiment_voc_root(args.voc), args.split):
        boxes = [o.box for o in img.objects if o.name == "person" and not o.difficult]
        if boxes:
            images += 1
            best.update(c for c, _ in score_boxes(img.path, boxes, model, context=args.context).best())
    n = sum(best.values())
    print(f"{n} person boxes in {images} {args.split} images, {time.perf_counter() - t0:.0f} s: "
          f"{100 * best['person'] / n:.1f} % classified person")
    print("  most probable class: " + ", ".join(f"{c} {k}" for c, k in best.most_common(6)))


if __name__ == "__main__":
    main()
