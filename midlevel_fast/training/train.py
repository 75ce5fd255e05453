"""Training the adaptation head on cached mid-level vectors (Oquab et al., section 3.2): the loop.

The frozen network has already run (see :mod:`midlevel_fast.cache.feature_cache`); here only FCa/FCb learn:

* rows: the labelled, background-resampled patches of :func:`midlevel_fast.training.patches.patch_set`;
* objective: :func:`midlevel_fast.training.loss.batch_loss`, cross-entropy over C + 1 outputs (``"softmax"``, the
  paper's) or per-output binary cross-entropy on multi-hot targets (``"multilabel"``);
* SGD with momentum and dropout; the paper's schedule: learning rate 0.01, divided by 10 each time the
  training loss stops falling (relative improvement below ``min_improvement``), three times, then stop;
* after every epoch the validation mAP (:func:`midlevel_fast.training.evaluate.evaluate_head`: power mean of
  patch scores, VOC2010+ AP) is measured and the best epoch's weights are kept;
* optionally (``consistency = λ > 0``, not in the paper) each batch also draws as many pairs of a dense window
  and a grid crop, and adds λ times the symmetric KL of their object-class distributions
  (:mod:`midlevel_fast.training.consistency`) to the loss. The schedule still follows the classification loss alone;
* with ``supervision = "image"`` (not in the paper; its authors' 2015 sequel) the rows are every window of each
  training image, batches are ``images_per_batch`` images and the loss is that of their pooled window
  probabilities against the images' labels (:mod:`midlevel_fast.training.weak`). Schedule, validation and seeding
  are the same.

Everything is seeded: the same inputs and config give bit-identical weights. Under an initialised
``torch.distributed`` group of several ranks the head trains with DistributedDataParallel and matches the
single-process result to float32 rounding (see :mod:`midlevel_fast.runtime.train_ddp`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from midlevel_fast.backbones.base import Backbone
from midlevel_fast.backbones.top import top_state
from midlevel_fast.model.head import OBJECTIVES, AdaptationHead
from midlevel_fast.runtime.train_ddp import Replica, replica_for
from midlevel_fast.training.consistency import PairSet
from midlevel_fast.training.epochs import BestEpoch, LrSchedule, run_epoch
from midlevel_fast.training.evaluate import evaluate_head
from midlevel_fast.training.patches import EvalSet, PatchSet
from midlevel_fast.training.pooling import DEFAULT_SHARPNESS, POOLINGS
from midlevel_fast.training.steps import Step, image_level_step, patch_step
from midlevel_fast.training.unfreeze import UNFREEZE, TopAndHead
from midlevel_fast.training.weak import image_step

# What the targets are: each patch's class from the boxes (the paper), or only each image's classes.
SUPERVISIONS: tuple[str, ...] = ("boxes", "image")


@dataclass(frozen=True)
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
    # Image-level labels (supervision="image"): how windows pool per class (the power mean takes k) and the
    # images of a batch.
    supervision: str = "boxes"
    pooling: str = "max"
    sharpness: float = DEFAULT_SHARPNESS
    images_per_batch: int = 16
    # "top": the backbone's last block trains too (the paper's "U" rows), at lr * top_lr_scale; the rows are then
    # the inputs of that block (midlevel_fast.training.unfreeze).
    unfreeze: str = "none"
    top_lr_scale: float = 0.1

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not (0 < self.lr and 0 <= self.bg_fraction <= 1 and self.batch_size >= 1 and self.max_epochs >= 1):
            raise ValueError("need lr > 0, bg_fraction in [0, 1], batch_size >= 1 and max_epochs >= 1")
        if not self.consistency >= 0:
            raise ValueError(f"consistency must be >= 0, got {self.consistency}")
        if self.supervision not in SUPERVISIONS or self.pooling not in POOLINGS:
            raise ValueError(f"supervision must be one of {SUPERVISIONS} and pooling one of {POOLINGS}, got "
                             f"{self.supervision!r} and {self.pooling!r}")
        if self.supervision == "image" and (self.consistency or self.images_per_batch < 1):
            raise ValueError("image-level supervision needs images_per_batch >= 1 and no consistency term")
        if self.unfreeze not in UNFREEZE or not self.top_lr_scale > 0:
            raise ValueError(f"unfreeze must be one of {UNFREEZE} and top_lr_scale > 0, got {self.unfreeze!r} and "
                             f"{self.top_lr_scale!r}")
        if self.unfreeze != "none" and (self.supervision == "image" or self.consistency):
            raise ValueError("unfreeze='top' trains on one patch per sample (box supervision, no consistency term)")


@dataclass
class TrainResult:
    """The trained ``head`` (the best validation epoch's weights when there was a validation set, else the last
    epoch's), one ``history`` record per epoch (``epoch``, ``lr``, ``loss``, ``val_map``, ``seconds``), the best
    epoch and its validation mAP, the training time, and with ``unfreeze="top"`` the trained ``top``'s weights
    (:func:`midlevel_fast.backbones.top.top_state`)."""

    head: AdaptationHead
    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_map: float = float("nan")
    seconds: float = 0.0
    top: dict[str, torch.Tensor] | None = None


def train_head(train: PatchSet | EvalSet, num_classes: int, config: TrainConfig = TrainConfig(),
               val: EvalSet | None = None, log: Callable[[str], None] | None = print,
               data_parallel: bool | None = None, pairs: PairSet | None = None,
               backbone: Backbone | None = None,
               tie_break: Callable[[torch.nn.Module], float] | None = None) -> TrainResult:
    """Trains an :class:`AdaptationHead` on ``train`` by the schedule of the module docstring.

    ``train``: labelled patches (``config.supervision == "boxes"``), or every window of the training images with
    their image-level labels (``"image"``; the windows of each image contiguous, images in order).

    ``pairs``: the dense/crop pairs of :func:`midlevel_fast.training.consistency.consistency_pairs`, required when
    ``config.consistency > 0`` and ignored otherwise.

    ``backbone``: with ``config.unfreeze == "top"``, the backbone whose top trains with the head (a copy; the rows
    are flattened :meth:`~midlevel_fast.backbones.base.Backbone.below_top` outputs); ignored otherwise.

    ``tie_break``: among epochs of equal validation mAP (e.g. a small validation set at 100 %), keep the one where
    ``tie_break(model)`` is highest (``None``: the first); the model is in eval mode when called.

    ``data_parallel``: ``None`` trains with DDP when a ``torch.distributed`` group of several ranks is initialised
    (every rank passes the same ``train``, ``val`` and ``config``, and gets the same weights; only rank 0 logs),
    ``False`` always trains locally.
    """
    _check_rows(train, config, pairs)
    replica = replica_for(data_parallel)
    if replica is not None and not replica.ctx.is_main:
        log = None
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    head, top_and_head = _build_model(train, num_classes, config, backbone)
    trained: torch.nn.Module = head if top_and_head is None else top_and_head
    opt = _optimizer(head, top_and_head, config)
    model = trained if replica is None else replica.wrap(trained)
    step, n, batch_size = _batch_step(train, config, pairs, replica, generator)
    result, best = TrainResult(head, config), BestEpoch(tie_break)
    schedule = LrSchedule(config.lr, config.lr_drops, config.min_improvement)
    start = time.perf_counter()
    for epoch in range(config.max_epochs):
        record = {"epoch": epoch, "lr": schedule.lr,
                  "loss": run_epoch(trained, model, step, opt, n, batch_size, generator, replica)}
        if val is not None:
            _, record["val_map"] = evaluate_head(trained, val, config.objective, config.k, bf16=config.bf16)
            best.offer(epoch, record["val_map"], trained)
        record["seconds"] = time.perf_counter() - start
        result.history.append(record)
        if log:
            log(_epoch_line(record))
        if schedule.stop_after(record["loss"], opt):
            break
    if replica is not None:
        replica.unwrap(trained)
    _keep_best(result, trained, best, val is not None)
    if top_and_head is not None:
        result.top = top_state(top_and_head.backbone)
    result.seconds = time.perf_counter() - start
    return result


def _check_rows(train: PatchSet | EvalSet, config: TrainConfig, pairs: PairSet | None) -> None:
    """Raises ValueError unless ``train`` is the kind of rows ``config.supervision`` trains on and, with a
    consistency term, ``pairs`` are given with as many features per row."""
    image_level = config.supervision == "image"
    if image_level != isinstance(train, EvalSet):
        raise ValueError(f"supervision {config.supervision!r} trains on "
                         f"{'an EvalSet (images and their labels)' if image_level else 'a PatchSet'}, got "
                         f"{type(train).__name__}")
    if config.consistency > 0 and (pairs is None or not pairs):
        raise ValueError("config.consistency > 0 needs dense/crop pairs "
                         "(midlevel_fast.training.consistency.consistency_pairs)")
    if config.consistency > 0 and pairs is not None and pairs.dense.shape[1] != train.features.shape[1]:
        raise ValueError(f"pairs have {pairs.dense.shape[1]} features per row, the training rows "
                         f"{train.features.shape[1]}")


def _build_model(train: PatchSet | EvalSet, num_classes: int, config: TrainConfig,
                 backbone: Backbone | None) -> tuple[AdaptationHead, TopAndHead | None]:
    """A fresh head (from the global RNG) of ``num_classes + 1`` outputs and, with ``config.unfreeze == "top"``,
    the trainable copy of ``backbone``'s top in front of it (``None`` otherwise)."""
    if config.unfreeze == "top" and backbone is None:
        raise ValueError("unfreeze='top' needs the backbone whose top trains (train_head(..., backbone=...))")
    # TrainConfig allows unfreeze "none" and "top" only, and "top" comes with a backbone (checked above)
    if config.unfreeze == "top" and backbone is not None:
        head = AdaptationHead(backbone.feature_dim, num_classes + 1, config.layers, config.hidden, config.dropout)
        return head, TopAndHead(backbone, head)
    in_dim = train.features.shape[1]
    return AdaptationHead(in_dim, num_classes + 1, config.layers, config.hidden, config.dropout), None


def _optimizer(head: AdaptationHead, top_and_head: TopAndHead | None, config: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum over the head at ``config.lr`` and the top (if any) at ``lr * top_lr_scale``."""
    groups = [{"params": list(head.parameters()), "lr": config.lr}]
    if top_and_head is not None:
        groups.append({"params": top_and_head.top_parameters(), "lr": config.lr * config.top_lr_scale})
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _batch_step(train: PatchSet | EvalSet, config: TrainConfig, pairs: PairSet | None, replica: Replica | None,
                generator: torch.Generator) -> tuple[Step, int, int]:
    """The step of one batch, the number of rows (patches, or images for image-level supervision) and the batch
    size."""
    if isinstance(train, EvalSet):  # image-level supervision (checked by _check_rows)
        image_loss = image_step(train, config.objective, config.pooling, config.k, config.sharpness, config.bf16,
                                replica)
        return image_level_step(image_loss), len(train.positives), config.images_per_batch
    step = patch_step(train, config.objective, config.consistency, config.bf16, pairs, replica, generator)
    return step, len(train.features), config.batch_size


def _epoch_line(record: dict) -> str:
    """The log line of one epoch's ``history`` record."""
    val_text = f"  val mAP {100 * record['val_map']:.2f}" if "val_map" in record else ""
    return (f"epoch {record['epoch']:2d}  lr {record['lr']:.0e}  loss {record['loss']:.4f}{val_text}  "
            f"({record['seconds']:.0f} s)")


def _keep_best(result: TrainResult, trained: torch.nn.Module, best: BestEpoch, validated: bool) -> None:
    """Loads the best validation epoch's weights into ``trained`` and records that epoch in ``result`` (without
    validation: the last epoch, whose weights ``trained`` has); leaves ``trained`` in eval mode."""
    if validated:
        if best.state is None:
            raise RuntimeError("no validation epoch was kept (every mAP NaN and the tie-break -inf or NaN)")
        trained.load_state_dict(best.state)
        result.best_epoch, result.best_map = best.epoch, best.val_map
    else:
        result.best_epoch = len(result.history) - 1
    trained.eval()
