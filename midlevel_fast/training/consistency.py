"""Dense/per-patch consistency: an optional training term (``TrainConfig.consistency``) that teaches the head to
give a dense window and the isolated crop of (nearly) the same box the same probabilities.

Why it exists: ``score_image(mode="dense")`` computes a window's mid-level vector from one trunk pass over the
whole image, so its cells see the neighbours' pixels (EfficientNet-Lite0's receptive field is 851 px), while a
crop sees zero padding around the patch. A head trained on per-patch crops is confidently wrong on some crops of
object parts that the window's context gets right (a cow's leg: 0.998 "sheep" as a crop, 0.79 as a window). The
absent classes' power-mean scores are set by such few patches, so their ranks differ between the two modes. On 50
VOC val images a head trained on both kinds of patches gives a median Spearman ρ of 0.86 between the modes; the
term lifts it above 0.9 (docs/dense_agreement.md).

The term, for a batch of pairs ``(d, c)`` of a dense window and a crop, compares the head's outputs over the C
object classes only, with the background output left out:

* softmax objective: ``p`` and ``q`` are the softmax over the C object logits (the class distribution given
  that the patch shows an object), and the term is ``λ · ½ (KL(p‖q) + KL(q‖p)) = λ · ½ Σ_j (p_j − q_j)(log p_j −
  log q_j)``;
* multilabel objective: the same symmetric KL of each object output's Bernoulli, summed over the C outputs,
  which is ``λ · ½ Σ_j (p_j − q_j)(z_j − z'_j)`` with ``z`` the logits;

averaged over the pairs. Pairs need no labels: background and dropped patches take part too.

Why the background is left out: with it, the cheapest way to make two views agree is to call both background,
and the head learns exactly that. On VOC train → val a term over all C + 1 outputs (λ = 3) raised the mean
background probability of the val windows from 0.60 to 0.86, and scikit-image's close-up cat photo became 99.7 %
background; over the object classes alone it stays at 0.60 and the agreement is better (median ρ 0.95 against
0.91 from cached features).

Pairs come from two feature caches of the same images, one of dense windows and one of the paper's grid crops
(:func:`consistency_pairs`). The dense windows' boxes are not the grid's (their stride is a whole number of trunk
cells), so each window is paired with the grid crop of the same scale that overlaps it most (highest IoU).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from midlevel_fast.cache.feature_cache import FeatureCache
from midlevel_fast.training.labels import box_iou

# The cache modes a pair is drawn from: dense windows, and the grid crops they are matched with.
PAIR_MODES: tuple[str, str] = ("dense", "batched")
# IoU entries match_windows holds at a time: windows are matched in row blocks, so memory stays bounded however
# many windows a small window step gives (a whole N x M float64 matrix, and its masked copy, otherwise).
_MATCH_CHUNK = 1 << 20


@dataclass
class PairSet:
    """Consistency pairs: ``dense`` float16 ``(N, F)`` window features, ``crops`` float16 ``(M, F)`` grid-crop
    features, and ``index`` int64 ``(P, 2)``: pair ``i`` is ``dense[index[i, 0]]`` with ``crops[index[i, 1]]``."""

    dense: torch.Tensor
    crops: torch.Tensor
    index: torch.Tensor

    def __len__(self) -> int:
        return len(self.index)


def match_windows(dense_boxes: torch.Tensor | np.ndarray, dense_scale: torch.Tensor | np.ndarray,
                  crop_boxes: torch.Tensor | np.ndarray, crop_scale: torch.Tensor | np.ndarray) -> torch.Tensor:
    """For each dense window, the index of the crop of the same scale index with the highest IoU (the first one on
    ties), or -1 where no crop has that scale index: int64 ``(N,)``.

    Boxes are ``(x0, y0, x1, y1)`` in image pixels, ``(N, 4)`` and ``(M, 4)``; scale indices int ``(N,)`` and
    ``(M,)``. Memory: ``O(N + M + _MATCH_CHUNK)``, the IoU matrix computed a block of windows at a time.
    """
    ds = torch.as_tensor(np.asarray(dense_scale)).long().reshape(-1)
    cs = torch.as_tensor(np.asarray(crop_scale)).long().reshape(-1)
    if len(ds) != len(dense_boxes) or len(cs) != len(crop_boxes):
        raise ValueError(f"scale indices ({len(ds)}, {len(cs)}) do not match the boxes "
                         f"({len(dense_boxes)}, {len(crop_boxes)})")
    if len(crop_boxes) == 0:
        return torch.full((len(ds),), -1, dtype=torch.int64)
    dense_boxes, crop_boxes = torch.as_tensor(dense_boxes), torch.as_tensor(crop_boxes)
    rows = max(1, _MATCH_CHUNK // len(crop_boxes))
    out = []
    for s in range(0, len(ds), rows):
        iou = torch.where(ds[s: s + rows, None] == cs[None, :], box_iou(dense_boxes[s: s + rows], crop_boxes), -1.0)
        best, index = iou.max(dim=1)
        out.append(torch.where(best >= 0, index, -1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def consistency_pairs(dense: FeatureCache, crops: FeatureCache, image_ids: Sequence[str]) -> PairSet:
    """Every dense window of ``image_ids`` paired by :func:`match_windows` with a grid crop of the same image.

    ``dense`` must be a ``mode="dense"`` cache and ``crops`` a ``mode="batched"`` one of the same backbone and
    scales; both must hold every image (``KeyError`` otherwise).
    """
    a, b = dense.config, crops.config
    if (a.mode, b.mode) != PAIR_MODES:
        raise ValueError(f"consistency pairs need a dense cache and a batched one, got {a.mode!r} and {b.mode!r}")
    if (a.backbone, a.scales, a.feature_dim) != (b.backbone, b.scales, b.feature_dim):
        raise ValueError(f"the dense and batched caches differ in backbone, scales or feature size: "
                         f"{(a.backbone, a.scales, a.feature_dim)} against {(b.backbone, b.scales, b.feature_dim)}")
    dense_feats, crop_feats, index = [], [], []
    n_dense = n_crops = 0
    for image_id in image_ids:
        d, c = dense.load(image_id), crops.load(image_id)
        if d.size != c.size:
            raise ValueError(f"{image_id}: the dense cache has size {d.size}, the batched one {c.size}")
        match = match_windows(d.boxes, d.scale_index, c.boxes, c.scale_index)
        paired = (match >= 0).nonzero().flatten()
        index.append(torch.stack([paired + n_dense, match[paired] + n_crops], dim=1))
        dense_feats.append(torch.from_numpy(np.array(d.features)))
        crop_feats.append(torch.from_numpy(np.array(c.features)))
        n_dense += len(d.boxes)
        n_crops += len(c.boxes)
    if not index:
        raise ValueError("no images to pair")
    return PairSet(torch.cat(dense_feats), torch.cat(crop_feats), torch.cat(index))


def consistency_loss(a: torch.Tensor, b: torch.Tensor, objective: str,
                     global_batch: tuple[int, int] | None = None) -> torch.Tensor:
    """Half the symmetric KL between the head's object-class outputs for logits ``a`` and ``b`` (``(P, C + 1)``,
    the last column background; row ``i`` of both is one pair), averaged over the pairs; see the module docstring.
    ``global_batch``: as in :func:`midlevel_fast.training.loss.batch_loss`."""
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"paired logits must have one shape (P, C + 1) with C >= 1, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    a, b = a[:, :-1], b[:, :-1]
    if objective == "softmax":
        la, lb = F.log_softmax(a, dim=1), F.log_softmax(b, dim=1)
        summed = ((la.exp() - lb.exp()) * (la - lb)).sum()
    else:
        summed = ((torch.sigmoid(a) - torch.sigmoid(b)) * (a - b)).sum()
    rows, world_size = global_batch if global_batch is not None else (len(a), 1)
    return summed * (0.5 * world_size / rows)
