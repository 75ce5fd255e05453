"""Training the adaptation head on cached mid-level vectors (Oquab et al., section 3.2).

The frozen network has already run (see :mod:`midlevel_fast.training.cache`); here only FCa/FCb learn:

* rows: each cached patch of each training image, labelled by :func:`midlevel_fast.training.labels.patch_labels`, with a
  seeded random ``bg_fraction`` (10 %) of the background kept (:func:`midlevel_fast.training.labels.resample_background`);
* objective: cross-entropy over C + 1 outputs (``"softmax"``, the paper's), or per-output binary cross-entropy
  on multi-hot targets (``"multilabel"``, the paper's suggested fix for co-occurring objects: a patch that
  qualifies for objects of several classes is kept with all of them instead of being dropped);
* SGD with momentum and dropout; the paper's schedule: learning rate 0.01, divided by 10 each time the
  training loss stops falling (relative improvement below ``min_improvement``), three times, then stop;
* after every epoch the validation mAP (power mean of patch scores, VOC2010+ AP) is measured and the best
  epoch's weights are kept;
* optionally (``consistency = λ > 0``, not in the paper) each batch also draws as many pairs of a dense window
  and a grid crop, and adds λ times the symmetric KL of their object-class distributions
  (:mod:`midlevel_fast.training.consistency`) to the loss. The schedule still follows the classification loss alone.

Everything is seeded: the same inputs and config give bit-identical weights. Under an initialised
``torch.distributed`` group of several ranks the head trains with DistributedDataParallel and matches the
single-process result to float32 rounding (see :mod:`midlevel_fast.scaleout.train_ddp`).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from midlevel_fast.training.cache import FeatureCache
from midlevel_fast.training.consistency import PairSet, consistency_loss
from midlevel_fast.training.evaluate import mean_average_precision
from midlevel_fast.training.labels import DROPPED, patch_labels, qualification, resample_background
from midlevel_fast.head import OBJECTIVES, AdaptationHead, class_probabilities
from midlevel_fast.training.voc import VocImage, image_labels, object_arrays

@dataclass
class TrainConfig:
    """Hyper-parameters; the defaults are the paper's where it gives them."""

    layers: int = 2
    hidden: int = 2048
    dropout: float = 0.5
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    max_epochs: int = 30
    lr_drops: int = 3
    min_improvement: float = 0.05
    bg_fraction: float = 0.1
    objective: str = "softmax"
    k: float = 5.0
    seed: int = 0
    consistency: float = 0.0
    # bfloat16 matrix products (fp32 master weights): 3-4x faster on CPUs with native bf16, same mAP.
    bf16: bool = True

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not (0 < self.lr and 0 <= self.bg_fraction <= 1 and self.batch_size >= 1 and self.max_epochs >= 1):
            raise ValueError("need lr > 0, bg_fraction in [0, 1], batch_size >= 1 and max_epochs >= 1")
        if not self.consistency >= 0:
            raise ValueError(f"consistency must be >= 0, got {self.consistency}")


@dataclass
class PatchSet:
    """Training rows: ``features`` float16 ``(R, F)``; ``targets`` int64 ``(R,)`` (softmax, class ``C`` is
    background) or float32 ``(R, C + 1)`` multi-hot (multilabel); ``counts`` per class (index ``C``:
    background kept)."""

    features: torch.Tensor
    targets: torch.Tensor
    counts: np.ndarray


@dataclass
class EvalSet:
    """All cached patches of evaluation images: ``features`` float16 ``(P, F)``, ``image_index`` int64
    ``(P,)`` and per-image VOC ground truth ``positives``/``ignore`` bool ``(n, C)``."""

    features: torch.Tensor
    image_index: torch.Tensor
    positives: np.ndarray
    ignore: np.ndarray


@dataclass
class TrainResult:
    head: AdaptationHead
    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_map: float = float("nan")
    seconds: float = 0.0


def patch_set(cache: FeatureCache, images: Sequence[VocImage], classes: Sequence[str], bg_fraction: float = 0.1,
              seed: int = 0, objective: str = "softmax") -> PatchSet:
    """Labels and resamples the cached patches of ``images`` (see the module docstring)."""
    num_classes = len(classes)
    cached, labels, hots = [], [], []
    for img in images:
        c = cache.load(img.image_id)
        boxes, cls, difficult = object_arrays(img, classes)
        if objective == "softmax":
            labels.append(patch_labels(c.boxes, boxes, cls, num_classes, difficult))
        else:
            overlaps, qualifies = qualification(c.boxes, boxes)
            clean = (qualifies & ~difficult[None, :]).double()
            hot = torch.zeros(len(c.boxes), num_classes + 1)
            hot[:, :num_classes] = (clean @ F.one_hot(cls, num_classes).double()).clamp(max=1).float()
            background = ~overlaps.any(dim=1)
            hot[background, num_classes] = 1
            # Same patches as the softmax labelling, except that several clean objects are allowed.
            positive = hot[:, :num_classes].any(dim=1) & ~(qualifies & difficult[None, :]).any(dim=1)
            labels.append(torch.where(background, num_classes, torch.where(positive, 0, DROPPED)))
            hots.append(hot)
        cached.append(c)
    # One draw over the whole split, so that exactly bg_fraction of its background is kept.
    keep = resample_background(torch.cat(labels), num_classes, bg_fraction, seed)
    feats, start = [], 0
    for c in cached:
        mask = keep[start: start + len(c.boxes)].numpy()
        feats.append(torch.from_numpy(np.asarray(c.features[mask])))
        start += len(c.boxes)
    if objective == "softmax":
        targets = torch.cat(labels)[keep]
        counts = torch.bincount(targets, minlength=num_classes + 1).numpy()
    else:
        targets = torch.cat(hots)[keep]
        counts = targets.sum(dim=0).long().numpy()
    return PatchSet(torch.cat(feats), targets, counts)


def merge_patch_sets(sets: Sequence[PatchSet]) -> PatchSet:
    """One training set from several (e.g. the dense windows and the grid crops of the same images), rows in order."""
    if not sets:
        raise ValueError("no patch set to merge")
    return PatchSet(torch.cat([s.features for s in sets]), torch.cat([s.targets for s in sets]),
                    sum((s.counts for s in sets[1:]), sets[0].counts.copy()))


def eval_set(cache: FeatureCache, images: Sequence[VocImage], classes: Sequence[str]) -> EvalSet:
    """Every cached patch of ``images`` with their images' VOC ground truth."""
    feats, index, pos, ign = [], [], [], []
    for i, img in enumerate(images):
        cached = cache.load(img.image_id)
        feats.append(torch.from_numpy(np.array(cached.features)))
        index.append(torch.full((len(cached.boxes),), i, dtype=torch.int64))
        p, g = image_labels(img, classes)
        pos.append(p)
        ign.append(g)
    return EvalSet(torch.cat(feats), torch.cat(index), np.stack(pos), np.stack(ign))


def patch_probabilities(head: torch.nn.Module, features: torch.Tensor, objective: str, num_classes: int,
                        chunk: int = 16384, bf16: bool = False) -> torch.Tensor:
    """``(P, C)`` float32 probabilities of the reported classes (softmax over C + 1, or per-class sigmoid);
    ``bf16`` runs the matrix products in bfloat16."""
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(features), chunk):
            out.append(class_probabilities(head(features[start: start + chunk].float()), objective, num_classes))
    return torch.cat(out)


def image_scores(probs: torch.Tensor, image_index: torch.Tensor, n_images: int, k: float) -> torch.Tensor:
    """Power mean ``1/M Σ y^k`` of patch probabilities ``(P, C)`` per image: ``(n_images, C)`` float64."""
    sums = torch.zeros(n_images, probs.shape[1], dtype=torch.float64).index_add_(0, image_index, probs.double() ** k)
    counts = torch.bincount(image_index, minlength=n_images).clamp(min=1).double()
    return sums / counts[:, None]


def evaluate_head(head: torch.nn.Module, data: EvalSet, objective: str, k: float,
                  method: str = "voc2010", bf16: bool = False) -> tuple[np.ndarray, float]:
    """Per-class AP and mAP of ``head`` on ``data`` with power-mean image scores."""
    was_training = head.training
    head.eval()
    probs = patch_probabilities(head, data.features, objective, data.positives.shape[1], bf16=bf16)
    head.train(was_training)
    scores = image_scores(probs, data.image_index, len(data.positives), k).numpy()
    return mean_average_precision(scores, data.positives, data.ignore, method)


def batch_loss(logits: torch.Tensor, targets: torch.Tensor, objective: str,
               global_batch: tuple[int, int] | None = None) -> torch.Tensor:
    """The loss to back-propagate: the mean over the batch's rows of the cross-entropy, or of the binary
    cross-entropies summed over the outputs for ``"multilabel"`` (averaging them over the outputs as well would
    shrink every gradient C + 1 times and leave the head untrained at the paper's learning rate).

    ``global_batch``: ``(rows, world_size)`` when ``logits`` are one rank's slice of a global batch of ``rows``;
    the slice's summed loss is then scaled so that averaging the ranks' gradients gives the global mean's.
    """
    if objective == "softmax":
        summed = F.cross_entropy(logits, targets, reduction="sum")
    else:
        summed = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    rows, world_size = global_batch if global_batch is not None else (len(logits), 1)
    return summed * (world_size / rows)


def train_head(train: PatchSet, num_classes: int, config: TrainConfig = TrainConfig(),
               val: EvalSet | None = None, log: Callable[[str], None] | None = print,
               data_parallel: bool | None = None, pairs: PairSet | None = None) -> TrainResult:
    """Trains an :class:`AdaptationHead` on ``train`` by the schedule of the module docstring.

    ``pairs``: the dense/crop pairs of :func:`midlevel_fast.training.consistency.consistency_pairs`, required when
    ``config.consistency > 0`` and ignored otherwise.

    ``data_parallel``: ``None`` trains with DDP when a ``torch.distributed`` group of several ranks is initialised
    (every rank passes the same ``train``, ``val`` and ``config``, and gets the same weights; only rank 0 logs),
    ``False`` always trains locally.
    """
    from midlevel_fast.scaleout.train_ddp import replica_for

    if config.consistency > 0 and not pairs:
        raise ValueError("config.consistency > 0 needs dense/crop pairs "
                         "(midlevel_fast.training.consistency.consistency_pairs)")
    if config.consistency > 0 and pairs.dense.shape[1] != train.features.shape[1]:
        raise ValueError(f"pairs have {pairs.dense.shape[1]} features per row, the training rows "
                         f"{train.features.shape[1]}")
    replica = replica_for(data_parallel)
    if replica is not None and not replica.ctx.is_main:
        log = None
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    head = AdaptationHead(train.features.shape[1], num_classes + 1, config.layers, config.hidden, config.dropout)
    model = head if replica is None else replica.wrap(head)
    opt = torch.optim.SGD(head.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    result = TrainResult(head, config)
    best_loss, drops, lr = math.inf, 0, config.lr
    start = time.perf_counter()
    n = len(train.features)
    for epoch in range(config.max_epochs):
        head.train()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for s in range(0, n, config.batch_size):
            idx = order[s: s + config.batch_size]
            batches = [idx]
            if config.consistency > 0:
                drawn = torch.randint(len(pairs), (len(idx),), generator=generator)
                batches += [drawn, drawn]  # the dense sides, then the crop sides
            mine = batches if replica is None else replica.rows(*batches)
            x, y = [train.features[mine[0]]], train.targets[mine[0]]
            if config.consistency > 0:
                x += [pairs.dense[pairs.index[mine[1], 0]], pairs.crops[pairs.index[mine[2], 1]]]
            # One forward over rows and both sides of the pairs, so that DDP sees one pass per step.
            inputs = torch.cat(x).float()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                logits = model(inputs)
            logits = logits.float().split([len(part) for part in x])
            world = 1 if replica is None else replica.world_size
            loss = batch_loss(logits[0], y, config.objective, (len(idx), world))
            objective = loss
            if config.consistency > 0:
                objective = objective + config.consistency * consistency_loss(logits[1], logits[2], config.objective,
                                                                              (len(idx), world))
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            total += loss.item() * len(idx)
        # A replica's loss is its slice's share scaled by world_size, so the mean over ranks is the global total.
        epoch_loss = (total if replica is None else replica.mean(total)) / n
        record = {"epoch": epoch, "lr": lr, "loss": epoch_loss}
        if val is not None:
            _, record["val_map"] = evaluate_head(head, val, config.objective, config.k, bf16=config.bf16)
            if not result.best_map >= record["val_map"]:
                result.best_map, result.best_epoch = record["val_map"], epoch
                best_state = copy.deepcopy(head.state_dict())
        record["seconds"] = time.perf_counter() - start
        result.history.append(record)
        if log:
            val_text = f"  val mAP {100 * record['val_map']:.2f}" if val is not None else ""
            log(f"epoch {epoch:2d}  lr {lr:.0e}  loss {epoch_loss:.4f}{val_text}  ({record['seconds']:.0f} s)")
        if epoch_loss > best_loss * (1 - config.min_improvement):
            if drops == config.lr_drops:
                break
            drops += 1
            lr /= 10
            for group in opt.param_groups:
                group["lr"] = lr
        best_loss = min(best_loss, epoch_loss)
    if replica is not None:
        replica.unwrap(head)
    if val is not None:
        head.load_state_dict(best_state)
    else:
        result.best_epoch = len(result.history) - 1
    head.eval()
    result.seconds = time.perf_counter() - start
    return result


def config_dict(config: TrainConfig) -> dict:
    """The config as plain values, for head metadata."""
    return asdict(config)
