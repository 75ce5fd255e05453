"""The VOC-20 head shipped in the package: loads offline and makes the default model useful."""
from __future__ import annotations

import pytest

from midlevel_fast import load_head, score_image
from midlevel_fast.model.classifier import default_model, shipped_head_path
from midlevel_fast.datasets.voc import VOC_CLASSES

pytestmark = pytest.mark.skipif(shipped_head_path() is None, reason="this build ships no VOC head")


def test_shipped_head_loads_offline(monkeypatch):
    # Any attempt to reach the network would fail loudly.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    head, info = load_head(shipped_head_path())
    assert info.backbone == "efficientnet_lite0" and info.class_names == list(VOC_CLASSES)
    assert info.background and info.k == 5 and head.layers == info.layers
    assert shipped_head_path().stat().st_size < 8 * 2**20
    assert default_model().class_names == list(VOC_CLASSES)


# Val images whose only objects are cats / persons (the shipped head was trained on trainval; the tests
# check that it is wired in and sane, not its generalisation, which docs/voc_training.md's val mAP reports).
@pytest.mark.parametrize("image_id,expected", [("2008_000464", "cat"), ("2008_001885", "cat"),
                                               ("2008_000213", "person"), ("2008_000474", "person")])
def test_default_model_puts_the_right_class_on_top(voc, image_id, expected):
    res = score_image(voc / "JPEGImages" / f"{image_id}.jpg")
    assert res.class_names == list(VOC_CLASSES)
    assert res.top(1)[0][0] == expected, res.top(3)
