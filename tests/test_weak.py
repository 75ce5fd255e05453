"""Image-level supervision: the loss against PyTorch's binary cross-entropy, and a head trained from image labels
alone finding the one window per image that carries its class."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from midlevel_fast.scoring.points import window_points
from midlevel_fast.training.evaluate import patch_probabilities
from midlevel_fast.training.pooling import POOLINGS
from midlevel_fast.training.train import TrainConfig, train_head
from midlevel_fast.training.weak import image_loss
from tests.distributed_worker import signal_windows, synthetic_rows


@pytest.mark.parametrize("pooled, labels, ignore", [
    ([[0.9, 0.2, 0.5]], [[1, 0, 1]], [[0, 0, 0]]),
    ([[0.9, 0.2], [1e-30, 0.999999]], [[0, 1], [1, 0]], [[0, 0], [0, 0]]),
    ([[0.3, 0.7], [0.6, 0.1]], [[1, 1], [0, 1]], [[0, 1], [1, 0]]),  # ignored terms left out
    ([[1e-50, 0.5], [0.5, 1e-60]], [[1, 0], [1, 1]], [[0, 0], [0, 0]]),  # log P floored at -100, as PyTorch
])
def test_image_loss_is_the_binary_cross_entropy_of_the_pooled_probabilities(pooled, labels, ignore):
    p, y, ign = torch.tensor(pooled, dtype=torch.float64), torch.tensor(labels).float(), torch.tensor(ignore).bool()
    with np.errstate(divide="ignore"):
        got = image_loss(p.log(), y, ign)
    keep = ~ign
    want = F.binary_cross_entropy(p[keep], y[keep].double(), reduction="sum") / len(p)
    assert float(got) == pytest.approx(float(want), rel=1e-12)


def test_image_loss_has_a_gradient_for_every_certain_mistake():
    # A negative pooled at exactly 1 and a positive far below float32's range: finite loss, finite non-zero
    # gradient for the positive, and the negative's term stops at -log 2^-24.
    log_pooled = torch.tensor([[0.0, -300.0]], requires_grad=True)
    loss = image_loss(log_pooled, torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == pytest.approx(-np.log(2.0 ** -24) + 100, rel=1e-6)
    assert torch.isfinite(log_pooled.grad).all() and float(log_pooled.grad[0, 1]) == -1.0


def test_image_loss_of_a_replica_slice_is_scaled_to_the_global_batch():
    p, y = torch.tensor([[0.4, 0.8]]).log(), torch.tensor([[1.0, 0.0]])
    ign = torch.zeros(1, 2, dtype=torch.bool)
    assert float(image_loss(p, y, ign, (4, 2))) == pytest.approx(float(image_loss(p, y, ign)) * 2 / 4)
    with pytest.raises(ValueError, match=r"need \(B, C\)"):
        image_loss(p, y[:, :1], ign)


WEAK = TrainConfig(hidden=32, lr=0.1, max_epochs=40, bf16=False, supervision="image", images_per_batch=8)


@pytest.mark.parametrize("objective", ["softmax", "multilabel"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_a_weak_head_fires_on_the_window_that_carries_the_class(pooling, objective):
    train, _ = signal_windows(96, seed=1)
    test, signal = signal_windows(40, seed=2)
    config = TrainConfig(**{**WEAK.__dict__, "pooling": pooling, "objective": objective})
    result = train_head(train, 3, config, log=None)
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    probs = patch_probabilities(result.head, test.features, objective, 3)
    # Each image's windows are cells of a 4 x 3 grid of 30 px squares: its point must land in the signal's cell.
    hits = played = 0
    for i in range(len(test.positives)):
        rows = (test.image_index == i).nonzero().flatten()
        cells = torch.arange(len(rows))
        boxes = torch.stack([cells % 4 * 30, cells // 4 * 30, cells % 4 * 30 + 30, cells // 4 * 30 + 30], 1).float()
        points = window_points(boxes, probs[rows], 90, 120)
        for c in np.flatnonzero(test.positives[i]):
            x, y = points[c].tolist()
            box = boxes[signal[i, c]].tolist()
            hits += box[0] <= x <= box[2] and box[1] <= y <= box[3]
            played += 1
    assert hits >= 0.95 * played, (hits, played)


def test_the_training_set_must_match_the_supervision():
    patches, images = synthetic_rows()
    with pytest.raises(ValueError, match="supervision 'image' trains on an EvalSet"):
        train_head(patches, 3, WEAK, log=None)
    with pytest.raises(ValueError, match="supervision 'boxes' trains on a PatchSet"):
        train_head(images, 3, TrainConfig(hidden=8), log=None)
    with pytest.raises(ValueError, match="and pooling one of .*got 'image' and 'mean'"):
        TrainConfig(supervision="image", pooling="mean")
    with pytest.raises(ValueError, match="no consistency term"):
        TrainConfig(supervision="image", consistency=1.0)
