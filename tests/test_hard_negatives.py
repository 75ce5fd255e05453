"""Hard-negative mining (midlevel_fast/training/hard_negatives.py) on 2-D points whose answer is known: positives
at x = 2 ... 3, 600 easy negatives at x = -10 and 5 hard ones at x = 0.5 ... 1.5, with an exact max-margin
threshold on x as the trainer (the hard-margin SVM of points separable along x), so that every score, count and
boundary below is exact."""
from __future__ import annotations

import pytest
import torch

from midlevel_fast.training.hard_negatives import mine_hard_negatives

HARD_X = [0.5, 0.75, 1.0, 1.25, 1.5]


class Threshold:
    """Score ``(x - t) / h``: the closest positive and negative score +1 and -1, as a hard-margin SVM's do."""

    def __init__(self, t: float, h: float, columns: int = 0) -> None:
        self.t, self.h, self.columns = t, h, columns

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        s = (features[:, 0].double() - self.t) / self.h
        return s if not self.columns else torch.stack([-s] + [s] * self.columns, dim=1)


def fit_threshold(features: torch.Tensor, labels: torch.Tensor, columns: int = 0) -> Threshold:
    lo, hi = float(features[labels == 0, 0].max()), float(features[labels > 0, 0].min())
    return Threshold((lo + hi) / 2, (hi - lo) / 2, columns)


class Images:
    """Three images of points, read lazily (each read counted): image 1 holds the hard negatives."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.rows = []
        for i in range(3):
            pos = torch.stack([torch.tensor([2.0, 2.25, 2.5, 3.0]), torch.rand(4, generator=g)], dim=1)
            easy = torch.stack([torch.full((200,), -10.0), torch.rand(200, generator=g)], dim=1)
            hard = torch.tensor([[x, 0.5] for x in HARD_X]) if i == 1 else torch.zeros(0, 2)
            ignored = torch.tensor([[1.9, 0.0]])  # label -1: would break the boundary if it were used
            features = torch.cat([easy[:100], pos, hard, easy[100:], ignored])
            labels = torch.tensor([0] * 100 + [1] * 4 + [0] * len(hard) + [0] * 100 + [-1])
            self.rows.append((features.double(), labels))
        self.reads = 0

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.reads += 1
        return self.rows[i]


HARD_IDS = [[1, 104 + k] for k in range(5)]


def test_random_negatives_alone_put_the_boundary_wrong():
    images = Images()
    scorer, log = mine_hard_negatives(images, fit_threshold, passes=0, initial_negatives=10)
    assert (scorer.t, scorer.h) == (-4.0, 6.0), "halfway between x = -10 and x = 2"
    assert not any(ids in log.cache.tolist() for ids in HARD_IDS), "seed 0 draws no hard negative"
    assert (scorer(torch.tensor([[x, 0.5] for x in HARD_X])) > 0).all(), "every hard negative scored positive"
    assert log.positives == 12 and log.negatives == (10,) and images.reads == 3


def test_mining_finds_the_hard_negatives_and_drops_the_easy_ones():
    images = Images()
    scorer, log = mine_hard_negatives(images, fit_threshold, passes=2, initial_negatives=10)
    # pass 1, scorer t=-4, h=6: the easy negatives score exactly -1 (not > -1), the hard ones 0.75 ... 0.92
    # pass 2, scorer t=1.75, h=0.25: the 10 easy ones score -47 and hard x < 1.45 score <= -2: dropped
    assert log.added == (5, 0) and log.dropped == (0, 14) and log.capped == (0, 0)
    assert log.negatives == (10, 15, 1)
    assert log.cache.tolist() == [[1, 108]], "only the hardest, x = 1.5, is left"
    assert (scorer.t, scorer.h) == (1.75, 0.25)
    assert (scorer(torch.tensor([[x, 0.5] for x in HARD_X])) <= -1).all()
    assert images.reads == 9, "each image read once per pass"


def test_cached_negatives_are_not_added_twice():
    # margin -1.5: pass 1 adds the 590 easy negatives not drawn (score -1) and the 5 hard ones; pass 2 drops all
    # but x = 1.5 (score -1 > -1.5 again, but already cached)
    _, log = mine_hard_negatives(Images(), fit_threshold, passes=2, initial_negatives=10, margin=-1.5,
                                 easy_margin=-1.5)
    assert log.added == (595, 0) and log.dropped == (0, 604) and log.negatives == (10, 605, 1)


def test_a_cap_keeps_the_hardest_and_multiclass_scores_read_the_object_columns():
    scorer, log = mine_hard_negatives(Images(), lambda f, lab: fit_threshold(f, lab, columns=2), passes=1,
                                      initial_negatives=2, max_negatives=4)
    assert log.added == (5,) and log.capped == (3,) and log.negatives == (2, 4)
    assert log.cache.tolist() == [[1, 105], [1, 106], [1, 107], [1, 108]], "the two random easy ones and x = 0.5 go"
    assert (scorer.t, scorer.h) == (1.75, 0.25)


def test_the_seed_decides_the_random_negatives():
    a = mine_hard_negatives(Images(), fit_threshold, passes=0, initial_negatives=10, seed=3)[1].cache
    b = mine_hard_negatives(Images(), fit_threshold, passes=0, initial_negatives=10, seed=3)[1].cache
    c = mine_hard_negatives(Images(), fit_threshold, passes=0, initial_negatives=10, seed=4)[1].cache
    assert torch.equal(a, b) and not torch.equal(a, c)
    everything = mine_hard_negatives(Images(), fit_threshold, passes=0, initial_negatives=10_000)[1]
    assert everything.negatives == (605,), "more than there are: all of them"


@pytest.mark.parametrize(
    "kwargs, match",
    [({"passes": -1}, "passes >= 0"), ({"easy_margin": 0.0}, "easy_margin <= margin"),
     ({"max_negatives": 5}, "max_negatives"), ({"initial_negatives": -1}, "initial_negatives >= 0")],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mine_hard_negatives(Images(), fit_threshold, **({"initial_negatives": 10} | kwargs))


def test_bad_images_and_scores_are_refused():
    with pytest.raises(ValueError, match=r"images\[0\] must be"):
        mine_hard_negatives([(torch.zeros(3, 2), torch.zeros(3))], fit_threshold)
    with pytest.raises(ValueError, match="images is empty"):
        mine_hard_negatives([], fit_threshold)
    with pytest.raises(ValueError, match="the scorer must return"):
        mine_hard_negatives(Images(), lambda f, lab: (lambda x: torch.zeros(len(x), 1)), initial_negatives=10)
