"""Training the head on a synthetic cache whose features carry the class of the object a patch sits on."""
from __future__ import annotations

import pytest
import torch

from midlevel_fast.training.evaluate import evaluate_head
from midlevel_fast.training.patches import eval_set, patch_set
from midlevel_fast.training.train import TrainConfig, train_head
from tests.helpers import SYNTHETIC_CLASSES as CLASSES
from tests.helpers import synthetic_cache


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    return synthetic_cache(tmp, 40, 0) + synthetic_cache(tmp, 20, 1)


CFG = TrainConfig(hidden=32, batch_size=32, max_epochs=12, bf16=False)


@pytest.mark.parametrize("objective", ["softmax", "multilabel"])
def test_training_learns_and_is_deterministic(data, objective):
    cache, images, val_cache, val_images = data
    cfg = TrainConfig(**{**CFG.__dict__, "objective": objective})
    train = patch_set(cache, images, CLASSES, seed=0, objective=objective)
    val = eval_set(val_cache, val_images, CLASSES)
    a = train_head(train, len(CLASSES), cfg, val, log=None)
    b = train_head(train, len(CLASSES), cfg, val, log=None)
    for pa, pb in zip(a.head.parameters(), b.head.parameters()):
        assert torch.equal(pa, pb)
    losses = [r["loss"] for r in a.history]
    assert losses[-1] < losses[0]
    assert a.best_map == max(r["val_map"] for r in a.history)
    _, m = evaluate_head(a.head, val, objective, 5.0)
    assert m == pytest.approx(a.best_map) and m > 0.65  # chance is about 0.5


def test_schedule_divides_the_rate_three_times_then_stops(data):
    cache, images, _, _ = data
    cfg = TrainConfig(**{**CFG.__dict__, "max_epochs": 200, "min_improvement": 0.5})
    res = train_head(patch_set(cache, images, CLASSES), len(CLASSES), cfg, None, log=None)
    rates = sorted({r["lr"] for r in res.history}, reverse=True)
    assert rates == pytest.approx([1e-2, 1e-3, 1e-4, 1e-5])
    assert len(res.history) < 200
    assert res.best_epoch == len(res.history) - 1  # without validation the last epoch is kept


def test_tie_break_picks_among_epochs_of_equal_val_map(data):
    """Among epochs of the best val mAP the first is kept, or the one the tie-break ranks highest; here the
    tie-break prefers later epochs, so the last epoch reaching the best mAP wins."""
    cache, images, val_cache, val_images = data
    train, val = patch_set(cache, images, CLASSES), eval_set(val_cache, val_images, CLASSES)
    plain = train_head(train, len(CLASSES), CFG, val, log=None)
    calls = []

    def later_is_better(model):
        assert not model.training
        calls.append(1)
        return float(len(calls))

    broken = train_head(train, len(CLASSES), CFG, val, log=None, tie_break=later_is_better)
    maps = [r["val_map"] for r in plain.history]
    assert [r["val_map"] for r in broken.history] == maps and len(calls) == len(maps)
    assert plain.best_epoch == maps.index(max(maps))
    assert broken.best_epoch == len(maps) - 1 - maps[::-1].index(max(maps))


def test_bad_config():
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(objective="hinge")
