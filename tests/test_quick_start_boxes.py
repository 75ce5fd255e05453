"""The quick start's picture (README): with the default model, the boxes the CLI draws (score >= its --box-score,
0.5) are one per object, the cat and the motorbike, each at IoU >= 0.7 with the box a person draws around it.

The reference boxes were drawn by hand on the demo scene (451 + 445 pixels wide, 300 high) with a 10-pixel ruler:
the cat fills the left photo from its left edge to the tip of its right ear (x 395), top to bottom; the motorbike
spans the tail light (x 506) to the front tyre (x 862), the mirror (y 44) to the tyres' contact (y 270)."""
from __future__ import annotations

import pytest

from midlevel_fast import score_image
from midlevel_fast.cli.score import BOX_SCORE, _demo_image
from midlevel_fast.model.classifier import default_model

DRAWN = {"cat": (0.0, 0.0, 395.0, 300.0), "motorbike": (506.0, 44.0, 862.0, 270.0)}


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_one_tight_box_per_object_in_the_quick_start_scene():
    pytest.importorskip("skimage", reason="scikit-image provides the demo photos")
    if default_model().info.detector is None:
        pytest.fail("the shipped head has no ROI detector")
    shown = [d for d in score_image(_demo_image("cat_motorbike")).detections if d.score >= BOX_SCORE]
    assert sorted(d.label for d in shown) == ["cat", "motorbike"], shown
    for d in shown:
        assert iou(d.box, DRAWN[d.label]) >= 0.7, (d, DRAWN[d.label])
