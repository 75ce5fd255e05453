"""Dense/crop consistency: window-crop pairing against the exact loop, the symmetric KL, the pairs built from two
caches, and what the term does to training (single process here; DDP parity in tests/test_train_ddp.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from midlevel_fast.cache.feature_cache import CacheConfig, FeatureCache
from midlevel_fast.training import consistency
from midlevel_fast.training.consistency import PairSet, consistency_loss, consistency_pairs, match_windows
from midlevel_fast.training.patches import PatchSet
from midlevel_fast.training.train import TrainConfig, train_head
from tests.oracle.consistency import match_windows_reference

# Half-pixel coordinates keep areas exact, so equal rational IoUs are equal floats and ties break the same way.
coord = st.integers(-4, 28).map(lambda v: v / 2)
extent = st.integers(1, 24).map(lambda v: v / 2)
box = st.tuples(coord, coord, extent, extent).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@given(windows=st.lists(st.tuples(box, st.integers(0, 2)), min_size=1, max_size=12),
       crops=st.lists(st.tuples(box, st.integers(0, 2)), max_size=12))
def test_match_windows_equals_the_exact_loop(windows, crops):
    wb = torch.tensor([w[0] for w in windows], dtype=torch.float64).reshape(-1, 4)
    ws = torch.tensor([w[1] for w in windows])
    cb = torch.tensor([c[0] for c in crops], dtype=torch.float64).reshape(-1, 4)
    cs = torch.tensor([c[1] for c in crops], dtype=torch.int64)
    assert match_windows(wb, ws, cb, cs).tolist() == match_windows_reference(wb, ws, cb, cs).tolist()


@given(windows=st.lists(st.tuples(box, st.integers(0, 2)), min_size=1, max_size=30),
       crops=st.lists(st.tuples(box, st.integers(0, 2)), min_size=1, max_size=8), chunk=st.integers(1, 40))
def test_match_windows_in_row_blocks_equals_the_exact_loop(windows, crops, chunk):
    """Blocks of every size, down to one window per block (a chunk below the number of crops)."""
    wb = torch.tensor([w[0] for w in windows], dtype=torch.float64).reshape(-1, 4)
    ws = torch.tensor([w[1] for w in windows])
    cb = torch.tensor([c[0] for c in crops], dtype=torch.float64).reshape(-1, 4)
    cs = torch.tensor([c[1] for c in crops], dtype=torch.int64)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(consistency, "_MATCH_CHUNK", chunk)
        assert match_windows(wb, ws, cb, cs).tolist() == match_windows_reference(wb, ws, cb, cs).tolist()


def test_match_windows_ties_disjoint_boxes_and_missing_scales():
    windows = [[0, 0, 10, 10], [100, 100, 110, 110], [0, 0, 10, 10]]
    crops = [[5, 0, 15, 10], [-5, 0, 5, 10], [0, 0, 10, 10], [50, 50, 60, 60]]
    # window 0: two crops tie at IoU 1/3 at scale 0, the first wins; window 1 overlaps nothing of its scale
    # (IoU 0 still pairs it, with the first crop of that scale); window 2's scale has no crop.
    got = match_windows(torch.tensor(windows, dtype=torch.float32), [0, 1, 2], torch.tensor(crops), [0, 0, 1, 1])
    assert got.tolist() == [0, 2, -1]
    assert match_windows(torch.tensor(windows), [0, 1, 2], torch.zeros(0, 4), []).tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="scale indices"):
        match_windows(torch.tensor(windows), [0, 1], torch.tensor(crops), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="empty or inverted"):
        match_windows(torch.tensor([[0, 0, 0, 5]]), [0], torch.tensor(crops), [0, 0, 1, 1])


def symmetric_kl_reference(a: torch.Tensor, b: torch.Tensor, objective: str) -> torch.Tensor:
    """½ (KL(p‖q) + KL(q‖p)) per pair with torch's own KL over the object outputs (all but the last), averaged."""
    a, b = a[:, :-1], b[:, :-1]
    if objective == "softmax":
        la, lb = F.log_softmax(a.double(), 1), F.log_softmax(b.double(), 1)
        kl = F.kl_div(lb, la, log_target=True, reduction="none").sum(1) + F.kl_div(la, lb, log_target=True,
                                                                                 reduction="none").sum(1)
    else:
        # Each output's Bernoulli as a two-outcome distribution.
        pa = torch.stack([F.logsigmoid(a.double()), F.logsigmoid(-a.double())], -1)
        pb = torch.stack([F.logsigmoid(b.double()), F.logsigmoid(-b.double())], -1)
        kl = (F.kl_div(pb, pa, log_target=True, reduction="none") + F.kl_div(pa, pb, log_target=True,
                                                                           reduction="none")).sum((1, 2))
    return 0.5 * kl.mean()


@pytest.mark.parametrize("objective", ["softmax", "multilabel"])
@pytest.mark.parametrize("rows, outputs", [(1, 2), (7, 21), (64, 5)])  # C + 1 outputs
def test_consistency_loss_is_the_symmetric_kl(objective, rows, outputs):
    g = torch.Generator().manual_seed(rows)
    a, b = torch.randn(rows, outputs, generator=g) * 4, torch.randn(rows, outputs, generator=g) * 4
    got = consistency_loss(a.double(), b.double(), objective)
    torch.testing.assert_close(got, symmetric_kl_reference(a, b, objective), rtol=1e-10, atol=1e-12)
    assert consistency_loss(a, b, objective) == pytest.approx(consistency_loss(b, a, objective).item(), rel=1e-6)
    assert consistency_loss(a, a, objective).item() == 0.0
    # A slice of a global batch of 100 rows on one of 4 ranks: its share, scaled so the ranks' mean is the mean.
    assert consistency_loss(a.double(), b.double(), objective, (100, 4)).item() == pytest.approx(
        got.item() * rows * 4 / 100, rel=1e-12)


def test_consistency_loss_leaves_the_background_out():
    a = torch.tensor([[2.0, 0.0, -3.0], [0.5, 0.5, 0.0]])
    b = a.clone()
    b[:, -1] += torch.tensor([9.0, -4.0])  # only the background logit moves: the object distribution does not
    for objective in ("softmax", "multilabel"):
        assert consistency_loss(a, b, objective).item() == 0.0
        assert consistency_loss(a, a.flip(1), objective).item() > 0.1


def test_consistency_loss_rejects_unpaired_logits():
    with pytest.raises(ValueError, match="one shape"):
        consistency_loss(torch.zeros(3, 4), torch.zeros(2, 4), "softmax")
    with pytest.raises(ValueError, match="one shape"):
        consistency_loss(torch.zeros(3, 1), torch.zeros(3, 1), "softmax")


def two_caches(tmp_path, dim: int = 4, dense_scales=(1.0, 2.0), mode: str = "batched"):
    """A dense cache and a grid-crop cache of two images, features numbered by row so pairs can be read back."""
    def config(m, scales):
        return CacheConfig(backbone="toy", mode=m, scales=list(scales), grid_step=1 / 3, window_step=None,
                           feature_dim=dim)

    dense = FeatureCache(tmp_path / "dense", config("dense", dense_scales))
    crops = FeatureCache(tmp_path / "crops", config(mode, (1.0, 2.0)))
    windows = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [0, 0, 5, 5]])
    grid_boxes = torch.tensor([[1.0, 0, 11, 10], [9, 0, 19, 10], [0, 0, 6, 6], [40, 40, 45, 45]])
    for i, image_id in enumerate(["a", "b"]):
        dense.add(image_id, torch.arange(3 * dim).reshape(3, dim).float() + 100 * i, windows, torch.tensor([0, 0, 1]),
                  (30, 50))
        crops.add(image_id, -torch.arange(4 * dim).reshape(4, dim).float() - 100 * i, grid_boxes,
                  torch.tensor([0, 0, 1, 1]), (30, 50))
    return dense, crops


def test_pairs_from_two_caches(tmp_path):
    dense, crops = two_caches(tmp_path)
    pairs = consistency_pairs(dense, crops, ["a", "b"])
    assert len(pairs) == 6 and pairs.dense.dtype == pairs.crops.dtype == torch.float16
    assert pairs.index.tolist() == [[0, 0], [1, 1], [2, 2], [3, 4], [4, 5], [5, 6]]
    # The indices reach the features of the right image: image b's rows were offset by 100.
    assert pairs.dense[pairs.index[3, 0], 0].item() == 100 and pairs.crops[pairs.index[3, 1], 0].item() == -100


def test_pairs_refuse_mismatched_caches(tmp_path):
    dense, crops = two_caches(tmp_path / "1", mode="dense")
    with pytest.raises(ValueError, match="a dense cache and a batched one"):
        consistency_pairs(dense, crops, ["a"])
    dense, crops = two_caches(tmp_path / "2", dense_scales=(1.0, 3.0))
    with pytest.raises(ValueError, match="scales"):
        consistency_pairs(dense, crops, ["a"])
    dense, crops = two_caches(tmp_path / "3")
    with pytest.raises(KeyError, match="zz"):
        consistency_pairs(dense, crops, ["a", "zz"])
    with pytest.raises(ValueError, match="no images"):
        consistency_pairs(dense, crops, [])


def context_shift_data(n: int, seed: int, dim: int = 16, classes: int = 3):
    """Labelled 'dense' rows (a class prototype plus noise) and pairs of them with their 'crops': the same vectors
    moved by a random amount along one fixed direction, as context would move them. The crops carry no label."""
    fixed = np.random.default_rng(0)
    proto, direction = fixed.normal(size=(classes + 1, dim)) * 2, fixed.normal(size=dim)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes + 1, n)
    dense = proto[labels] + rng.normal(size=(n, dim)) * 0.7
    crops = dense + rng.normal(size=(n, 1)) * 3 * direction
    train = PatchSet(torch.from_numpy(dense).half(), torch.from_numpy(labels), np.bincount(labels))
    pairs = PairSet(torch.from_numpy(dense).half(), torch.from_numpy(crops).half(),
                    torch.arange(n).repeat(2, 1).T.contiguous())
    return train, pairs


def paired_disagreement(head, pairs: PairSet) -> float:
    head.eval()
    with torch.inference_mode():
        return consistency_loss(head(pairs.dense.float()), head(pairs.crops.float()), "softmax").item()


def test_the_term_makes_paired_outputs_agree_on_new_pairs():
    train, pairs = context_shift_data(400, seed=1)
    _, unseen = context_shift_data(400, seed=2)
    cfg = TrainConfig(hidden=32, batch_size=50, max_epochs=6, bf16=False)
    plain = train_head(train, 3, cfg, log=None, pairs=pairs)
    tied = train_head(train, 3, TrainConfig(**{**cfg.__dict__, "consistency": 3.0}), log=None, pairs=pairs)
    assert paired_disagreement(tied.head, unseen) < 0.3 * paired_disagreement(plain.head, unseen)
    # Without the term the pairs are not used at all: the same weights as training without them.
    alone = train_head(train, 3, cfg, log=None)
    for p, q in zip(plain.head.parameters(), alone.head.parameters()):
        assert torch.equal(p, q)


def test_the_term_needs_matching_pairs():
    train, pairs = context_shift_data(20, seed=0)
    cfg = TrainConfig(hidden=8, max_epochs=1, bf16=False, consistency=1.0)
    with pytest.raises(ValueError, match="needs dense/crop pairs"):
        train_head(train, 3, cfg, log=None)
    with pytest.raises(ValueError, match="needs dense/crop pairs"):
        train_head(train, 3, cfg, log=None, pairs=PairSet(pairs.dense, pairs.crops, torch.zeros(0, 2).long()))
    with pytest.raises(ValueError, match="features per row"):
        train_head(train, 3, cfg, log=None, pairs=PairSet(pairs.dense[:, :8], pairs.crops[:, :8], pairs.index))
    with pytest.raises(ValueError, match="consistency must be"):
        TrainConfig(consistency=-1.0)
