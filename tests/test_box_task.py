"""``midlevel-fast train --task boxes`` and ``score-boxes``: one square patch per sample, end to end on a synthetic
ImageFolder; the fine-tuned top (``--unfreeze top``) changes only the top; bad options."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from midlevel_fast.backbones import get_backbone
from midlevel_fast.cli import main
from midlevel_fast.model.head import load_head
from midlevel_fast.model.classifier import load_model
from midlevel_fast.scoring.boxes import score_boxes
from midlevel_fast.scoring.score import score_image
from midlevel_fast.datasets.box_samples import imagefolder_samples
from midlevel_fast.recipes.box_task import evaluate_probabilities, train_box_head
from midlevel_fast.training.train import TrainConfig
from tests.helpers import random_alexnet

COLOURS = {"cold": (30, 60, 200), "grass": (40, 190, 50), "warm": (200, 60, 30)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An ImageFolder of coloured noise of three sizes (one per class, like still-actions): 4 train and 2 val
    images per class."""
    root = tmp_path_factory.mktemp("actions")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for (cls, colour), (h, w) in zip(COLOURS.items(), ((60, 40), (50, 50), (40, 70))):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(colour, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def test_cli_trains_on_boxes_and_the_head_classifies_them(folder, tmp_path, capsys):
    head_file = tmp_path / "boxes.safetensors"
    args = ["train", "--task", "boxes", "--data", str(folder), "--format", "imagefolder", "--epochs", "4",
            "--cache", str(tmp_path / "cache"), "--out", str(head_file)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "12 training samples, one 1x square patch each (18 computed in" in out
    assert "on 12 boxes" in out and "val: 6 boxes, mAP" in out and "accuracy" in out and "log-loss" in out
    _, info = load_head(head_file)
    assert info.class_names == sorted(COLOURS) and info.top is None
    assert info.extra["task"] == "boxes" and info.extra["padding_mode"] == "reflect"
    model = load_model(head_file)
    for cls in COLOURS:
        for i in range(2):
            path = folder / "val" / cls / f"{i}.png"
            w, h = Image.open(path).size
            assert score_boxes(path, [[0, 0, w, h]], model).best()[0][0] == cls
    # The head is an ordinary one: score_image takes it too.
    assert score_image(folder / "val" / "warm" / "0.png", model, mode="batched").class_names == sorted(COLOURS)
    assert main(args) == 0 and "(all cached)" in capsys.readouterr().out


def test_unfreeze_top_trains_only_the_top(folder, tmp_path):
    train, classes = imagefolder_samples(folder, "train")
    val, _ = imagefolder_samples(folder, "val", classes)
    config = TrainConfig(max_epochs=2, unfreeze="top", hidden=64)
    run = train_box_head(train, classes, tmp_path / "top.safetensors", val, config=config, cache_base=tmp_path,
                         log=None)
    assert run.val is not None and run.val.n == 6
    frozen = get_backbone("efficientnet_lite0").state_dict()
    tuned = load_model(tmp_path / "top.safetensors").backbone.state_dict()
    top = get_backbone("efficientnet_lite0").top_modules
    changed = {k for k in frozen if not torch.equal(frozen[k], tuned[k])}
    assert changed and all(k.startswith(top) for k in changed)
    assert {k for k in frozen if k.startswith(top)} == set(run.info.top) == changed


@pytest.mark.parametrize("name", ["efficientnet_lite0", "alexnet"])
def test_top_of_below_top_is_the_mid_level_vector(name):
    bb = random_alexnet() if name == "alexnet" else get_backbone(name)
    patches = torch.randn(2, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        below = bb.below_top(patches)
        assert below.shape[1:] == bb.top_input_shape
        torch.testing.assert_close(bb.top(below), bb(patches), rtol=1e-5, atol=1e-5)


def test_evaluation_against_hand_computed_numbers():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.45], [0.2, 0.2, 0.4], [0.5, 0.3, 0.1]])
    labels = np.array([0, 1, 2, 1])
    ev = evaluate_probabilities(probs, labels)
    assert ev.accuracy == 0.75 and ev.n == 4
    want = -np.mean(np.log([0.7, 0.6 / 1.15, 0.4 / 0.8, 0.3 / 0.9]))
    assert ev.log_loss == pytest.approx(want, rel=1e-12)
    # class 0: 0.7 (+) first -> AP 1; class 1: 0.6 (+), 0.3 (+) first -> 1; class 2: 0.45 (-), 0.4 (+) -> 1/2
    np.testing.assert_allclose(ev.ap, [1.0, 1.0, 0.5])
    assert ev.map == pytest.approx(2.5 / 3)


def test_score_boxes_cli(folder, tmp_path, capsys):
    image = folder / "val" / "warm" / "0.png"
    assert main(["score-boxes", str(image), "--boxes", "0,0,35,20", "10,5,70,40", "--head", "imagenet"]) == 0
    out = capsys.readouterr().out
    assert "(2 boxes)" in out and "[0, 0, 35, 20]" in out and out.count("%") == 6
    (tmp_path / "boxes.json").write_text(json.dumps([{"box": [0, 0, 35, 20]}, [10, 5, 70, 40]]))
    assert main(["score-boxes", str(image), "--boxes-file", str(tmp_path / "boxes.json"), "--json",
                 "--head", "imagenet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["boxes"]) == 2 and len(data["boxes"][0]["classes"]) == 1000
    assert data["boxes"][0]["patch"] == [0.0, -7.5, 35.0, 27.5]


@pytest.mark.parametrize("content, message", [
    ("[]", "expected a non-empty JSON list"), ("{", "not valid JSON"), ('[[0, 0, "a", 1]]', "entry 0 is not a box"),
    ("[[0, 0, 500, 500], [600, 0, 700, 10]]", r"boxes\[1\].*outside the 70x40 image"),
])
def test_score_boxes_cli_reports_bad_boxes(folder, tmp_path, capsys, content, message):
    (tmp_path / "b.json").write_text(content)
    image = folder / "val" / "warm" / "0.png"
    assert main(["score-boxes", str(image), "--boxes-file", str(tmp_path / "b.json"), "--head", "imagenet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert __import__("re").search(message, err)


@pytest.mark.parametrize("args, message", [
    (["--task", "boxes"], "--task boxes reads --data PATH --format"),
    (["--task", "boxes", "--data", "D", "--format", "list"], "--task boxes reads --data PATH --format"),
    (["--task", "boxes", "--data", "D", "--supervision", "image"], "no --supervision image"),
    (["--voc", "V", "--unfreeze", "top"], "--unfreeze top trains one patch per box"),
    (["--data", "D", "--format", "coco", "--supervision", "image"], "--format coco gives boxes"),
])
def test_cli_refuses_inconsistent_box_options(args, message, tmp_path, capsys):
    assert main(["train", *args, "--out", str(tmp_path / "h.safetensors")]) == 2
    assert message in capsys.readouterr().err


def test_score_boxes_cli_needs_boxes(folder, capsys):
    assert main(["score-boxes", str(folder / "val" / "warm" / "0.png")]) == 2
    assert "give the boxes" in capsys.readouterr().err


def test_alexnet_top_trains_fc6_only():
    """The paper's "U" row on AlexNet: one SGD step through TopAndHead moves FC6 and the head, nothing else."""
    from midlevel_fast.model.head import AdaptationHead
    from midlevel_fast.training.unfreeze import TopAndHead

    bb = random_alexnet()
    model = TopAndHead(bb, AdaptationHead(bb.feature_dim, 4, hidden=8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    original = {k: v.clone() for k, v in bb.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(3, int(np.prod(bb.top_input_shape)))
    torch.nn.functional.cross_entropy(model.train()(x), torch.tensor([0, 1, 2])).backward()
    opt.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert {k for k in changed if k.startswith("backbone.")} == {"backbone.classifier.1.weight",
                                                                  "backbone.classifier.1.bias"}
    assert any(k.startswith("head.") for k in changed)
    assert all(torch.equal(v, original[k]) for k, v in bb.state_dict().items())  # the backbone given is untouched
