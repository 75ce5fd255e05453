"""Hard-negative mining (R-CNN, Girshick et al. 2014, section 2.3): train a scorer on every positive and a
cache of background proposals, the cache grown with the background the current scorer gets wrong.

Input: a sequence of images, ``images[i]`` being ``(features (N_i, F), labels (N_i,) int64)`` with the labels of
:func:`midlevel_fast.training.detection_labels.detection_labels` (``class + 1`` positive, 0 background, -1
ignored, never used). Indexing loads one image: a lazy sequence (reading a cache file per ``__getitem__``) streams
image by image, each image read once per pass; only the positives and the cached negatives are held.

A proposal's *hardness* is its score for being an object: the scorer's ``(n,)`` output, or the largest of the
object columns ``1..C`` of an ``(n, C+1)`` output (column 0, background, is not read). The procedure:

1. the initial set: every positive and ``initial_negatives`` background proposals drawn uniformly without
   replacement over all images (each gets a key from a CPU generator seeded with ``seed``; the smallest keys win),
   and the first scorer trained on them;
2. each of ``passes`` passes, with the current scorer: drop the cached negatives of hardness ``< easy_margin``
   (R-CNN: -1.2), add every background proposal not in the cache of hardness ``> margin`` (R-CNN's SVM margin,
   -1), keep the ``max_negatives`` hardest when over (equal hardness: the earlier cached first), retrain.

``passes=0`` is the random-negatives baseline. The scorer is called under ``torch.no_grad()``; ``train(features
(M, F), labels (M,) int64)`` gets the positives followed by the cached negatives (label 0), in cache order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch

Scorer = TypeVar("Scorer", bound=Callable[[torch.Tensor], torch.Tensor])
MARGIN = -1.0
EASY_MARGIN = -1.2


@dataclass(frozen=True)
class MiningLog:
    """What mining did: ``positives`` (rows), ``negatives[k]`` the negatives scorer ``k`` was trained on (0: the
    random ones), per pass ``added``, ``dropped`` (easy) and ``capped`` (over ``max_negatives``), and ``cache``,
    int64 ``(K, 2)`` ``(image index, row index)`` of the final scorer's negatives, in cache order."""

    positives: int
    negatives: tuple[int, ...]
    added: tuple[int, ...]
    dropped: tuple[int, ...]
    capped: tuple[int, ...]
    cache: torch.Tensor


class _Cache:
    """Negative rows with their ``(image, row)`` identities."""

    def __init__(self, features: torch.Tensor, ids: torch.Tensor) -> None:
        self.features, self.ids = features, ids

    def keep(self, mask_or_index: torch.Tensor) -> None:
        self.features, self.ids = self.features[mask_or_index], self.ids[mask_or_index]


def _image(images: Sequence[tuple[torch.Tensor, torch.Tensor]], i: int) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = images[i]
    labels = torch.as_tensor(labels).to(device="cpu").reshape(-1)
    if features.ndim != 2 or len(features) != len(labels) or labels.dtype != torch.int64:
        raise ValueError(f"images[{i}] must be (features (N, F), labels (N,) int64), got {tuple(features.shape)} "
                         f"and {labels.dtype} {tuple(labels.shape)}")
    return features, labels


def _hardness(scorer: Callable[[torch.Tensor], torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = scorer(features)
    if out.shape == (len(features),):
        return out.detach().double().cpu()
    if out.ndim == 2 and len(out) == len(features) and out.shape[1] >= 2:
        return out[:, 1:].amax(dim=1).detach().double().cpu()
    raise ValueError(f"the scorer must return (n,) or (n, C+1) for {len(features)} rows, got {tuple(out.shape)}")


def _initial(images: Sequence[tuple[torch.Tensor, torch.Tensor]], count: int,
             seed: int) -> tuple[torch.Tensor, torch.Tensor, _Cache]:
    """Positives (features, labels) and a uniform random ``count`` of the background, streaming."""
    generator = torch.Generator().manual_seed(seed)
    pos_f: list[torch.Tensor] = []
    pos_l: list[torch.Tensor] = []
    # Candidates are buffered and cut to the ``count`` smallest keys only when the buffer outgrows twice that:
    # the same choice as cutting after every image, without copying the kept rows once per image.
    neg_f: list[torch.Tensor] = []
    neg_ids: list[torch.Tensor] = [torch.zeros(0, 2, dtype=torch.int64)]
    neg_keys: list[torch.Tensor] = [torch.zeros(0)]
    pending = 0

    def cut() -> None:
        keys, ids = torch.cat(neg_keys), torch.cat(neg_ids)
        pool = torch.cat(neg_f) if neg_f else torch.zeros(0, 0)
        chosen = torch.sort(torch.argsort(keys)[:count]).values  # the smallest keys, kept in (image, row) order
        neg_f[:], neg_ids[:], neg_keys[:] = [pool[chosen]] if neg_f else [], [ids[chosen]], [keys[chosen]]

    for i in range(len(images)):
        features, labels = _image(images, i)
        pos_f.append(features[labels > 0])
        pos_l.append(labels[labels > 0])
        rows = torch.nonzero(labels == 0).flatten()
        neg_keys.append(torch.rand(len(rows), generator=generator))
        neg_ids.append(torch.stack([torch.full_like(rows, i), rows], dim=1))
        neg_f.append(features[rows])
        pending += len(rows)
        if pending > 2 * count:
            cut()
            pending = len(neg_ids[0])
    if not pos_f:
        raise ValueError("images is empty: nothing to train on")
    cut()
    features = neg_f[0] if neg_f else pos_f[0][:0]
    return torch.cat(pos_f), torch.cat(pos_l), _Cache(features, neg_ids[0])


def _mine(images: Sequence[tuple[torch.Tensor, torch.Tensor]], scorer: Callable[[torch.Tensor], torch.Tensor],
          cache: _Cache, margin: float, max_negatives: int | None) -> tuple[int, int]:
    """One pass adding the hard background of every image to ``cache``: ``(added, capped)``. The rows added are
    buffered and the cap applied when the buffer outgrows it (and at the end): keeping the hardest of the hardest
    so far plus the new rows is the same as capping after every image, without copying the cache per image."""
    added = 0
    hard = [_hardness(scorer, cache.features) if len(cache.ids) else torch.zeros(0, dtype=torch.float64)]
    feats, ids, size = [cache.features], [cache.ids], len(cache.ids)
    # The cache's own rows per image, looked up once rather than per image over the whole cache.
    cached_rows: dict[int, list[int]] = {}
    for image, row in cache.ids.tolist():
        cached_rows.setdefault(image, []).append(row)
    total = size

    def cap() -> int:
        all_hard, all_f, all_ids = torch.cat(hard), torch.cat(feats), torch.cat(ids)
        over = 0
        if max_negatives is not None and len(all_hard) > max_negatives:
            top = torch.sort(torch.sort(all_hard, descending=True, stable=True).indices[:max_negatives]).values
            over = len(all_hard) - max_negatives
            all_hard, all_f, all_ids = all_hard[top], all_f[top], all_ids[top]
        hard[:], feats[:], ids[:] = [all_hard], [all_f], [all_ids]
        return over

    capped = 0
    for i in range(len(images)):
        features, labels = _image(images, i)
        fresh = labels == 0
        fresh[torch.tensor(cached_rows.get(i, []), dtype=torch.int64)] = False
        rows = torch.nonzero(fresh).flatten()
        if not len(rows):
            continue
        h = _hardness(scorer, features[rows])
        new = h > margin
        added += int(new.sum())
        feats.append(features[rows[new]])
        ids.append(torch.stack([torch.full_like(rows[new], i), rows[new]], dim=1))
        hard.append(h[new])
        total += int(new.sum())
        if max_negatives is not None and total > 2 * max_negatives:
            capped += cap()
            total = len(ids[0])
    capped += cap()
    cache.features, cache.ids = feats[0], ids[0]
    return added, capped


def mine_hard_negatives(
    images: Sequence[tuple[torch.Tensor, torch.Tensor]],
    train: Callable[[torch.Tensor, torch.Tensor], Scorer],
    *,
    passes: int = 2,
    initial_negatives: int = 1000,
    margin: float = MARGIN,
    easy_margin: float = EASY_MARGIN,
    max_negatives: int | None = None,
    seed: int = 0,
) -> tuple[Scorer, MiningLog]:
    """Mine hard negatives by the procedure of the module docstring: ``(scorer, log)``, the scorer trained on
    the last cache. Needs ``passes >= 0``, ``initial_negatives >= 0``, ``easy_margin <= margin`` and
    ``max_negatives`` (``None``: no cap) ``>= initial_negatives``."""
    if passes < 0 or initial_negatives < 0 or not easy_margin <= margin:
        raise ValueError(f"need passes >= 0, initial_negatives >= 0 and easy_margin <= margin, got {passes}, "
                         f"{initial_negatives}, {easy_margin} > {margin}")
    if max_negatives is not None and max_negatives < initial_negatives:
        raise ValueError(f"max_negatives ({max_negatives}) must be at least initial_negatives ({initial_negatives})")
    pos_f, pos_l, cache = _initial(images, initial_negatives, seed)

    def fit() -> Scorer:
        labels = torch.cat([pos_l, torch.zeros(len(cache.ids), dtype=torch.int64)])
        return train(torch.cat([pos_f, cache.features.to(pos_f.dtype)]), labels)

    scorer = fit()
    negatives, added, dropped, capped = [len(cache.ids)], [], [], []
    for _ in range(passes):
        easy = _hardness(scorer, cache.features) < easy_margin if len(cache.ids) else torch.zeros(0, dtype=torch.bool)
        cache.keep(~easy)
        dropped.append(int(easy.sum()))
        a, c = _mine(images, scorer, cache, margin, max_negatives)
        added.append(a)
        capped.append(c)
        scorer = fit()
        negatives.append(len(cache.ids))
    return scorer, MiningLog(len(pos_l), tuple(negatives), tuple(added), tuple(dropped), tuple(capped), cache.ids)
