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
    neg_f: list[torch.Tensor] = []
    neg_ids, neg_keys = [torch.zeros(0, 2, dtype=torch.int64)], [torch.zeros(0)]
    for i in range(len(images)):
        features, labels = _image(images, i)
        pos_f.append(features[labels > 0])
        pos_l.append(labels[labels > 0])
        rows = torch.nonzero(labels == 0).flatten()
        keys = torch.cat([torch.cat(neg_keys), torch.rand(len(rows), generator=generator)])
        ids = torch.cat([torch.cat(neg_ids), torch.stack([torch.full_like(rows, i), rows], dim=1)])
        pool = torch.cat(neg_f + [features[rows]]) if neg_f else features[rows]
        chosen = torch.sort(torch.argsort(keys)[:count]).values  # the smallest keys, kept in (image, row) order
        neg_f, neg_ids, neg_keys = [pool[chosen]], [ids[chosen]], [keys[chosen]]
    if not pos_f:
        raise ValueError("images is empty: nothing to train on")
    return torch.cat(pos_f), torch.cat(pos_l), _Cache(neg_f[0], neg_ids[0])


def _mine(images: Sequence[tuple[torch.Tensor, torch.Tensor]], scorer: Callable[[torch.Tensor], torch.Tensor],
          cache: _Cache, margin: float, max_negatives: int | None) -> tuple[int, int]:
    """One pass adding the hard background of every image to ``cache``: ``(added, capped)``."""
    added = capped = 0
    hard = _hardness(scorer, cache.features) if len(cache.ids) else torch.zeros(0, dtype=torch.float64)
    for i in range(len(images)):
        features, labels = _image(images, i)
        fresh = labels == 0
        fresh[cache.ids[cache.ids[:, 0] == i, 1]] = False
        rows = torch.nonzero(fresh).flatten()
        if not len(rows):
            continue
        h = _hardness(scorer, features[rows])
        new = h > margin
        added += int(new.sum())
        cache.features = torch.cat([cache.features, features[rows[new]]])
        cache.ids = torch.cat([cache.ids, torch.stack([torch.full_like(rows[new], i), rows[new]], dim=1)])
        hard = torch.cat([hard, h[new]])
        if max_negatives is not None and len(hard) > max_negatives:
            top = torch.sort(torch.sort(hard, descending=True, stable=True).indices[:max_negatives]).values
            capped += len(hard) - max_negatives
            cache.keep(top)
            hard = hard[top]
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
