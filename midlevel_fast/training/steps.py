"""One batch of :func:`midlevel_fast.training.train.train_head`: the step on labelled patch rows (with the
optional consistency term of :mod:`midlevel_fast.training.consistency`), and the step on whole images
(image-level supervision, :func:`midlevel_fast.training.weak.image_step`)."""
from __future__ import annotations

from typing import Callable

import torch

from midlevel_fast.runtime.train_ddp import Replica
from midlevel_fast.training.consistency import PairSet, consistency_loss
from midlevel_fast.training.loss import batch_loss
from midlevel_fast.training.patches import PatchSet

# One batch: step(model, indices) -> (the loss the schedule follows, the objective to differentiate).
Step = Callable[[torch.nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def patch_step(train: PatchSet, objective: str, consistency: float, bf16: bool, pairs: PairSet | None,
               replica: Replica | None, generator: torch.Generator) -> Step:
    """One batch of patch rows: ``step(model, rows) -> (classification loss, objective)`` (``objective``: the
    head's, of :data:`midlevel_fast.model.head.OBJECTIVES`), the objective with ``consistency`` times the
    consistency term of pairs drawn from ``generator`` when ``consistency > 0``; the forward in bfloat16 autocast
    when ``bf16``. Under a ``replica`` each rank takes its slice of the rows and of the pairs."""
    world = 1 if replica is None else replica.world_size
    if consistency > 0 and pairs is None:
        raise ValueError("config.consistency > 0 needs dense/crop pairs")

    def step(model: torch.nn.Module, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batches = [idx]
        if consistency > 0 and pairs is not None:  # pairs is set then (checked above)
            drawn = torch.randint(len(pairs), (len(idx),), generator=generator)
            batches += [drawn, drawn]  # the dense sides, then the crop sides
        mine = batches if replica is None else replica.rows(*batches)
        x, y = [train.features[mine[0]]], train.targets[mine[0]]
        if consistency > 0 and pairs is not None:
            x += [pairs.dense[pairs.index[mine[1], 0]], pairs.crops[pairs.index[mine[2], 1]]]
        # One forward over rows and both sides of the pairs, so that DDP sees one pass per step.
        inputs = torch.cat(x).float()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(inputs)
        logits = logits.float().split([len(part) for part in x])
        loss = batch_loss(logits[0], y, objective, (len(idx), world))
        total = loss
        if consistency > 0:
            total = total + consistency * consistency_loss(logits[1], logits[2], objective, (len(idx), world))
        return loss, total

    return step


def image_level_step(image_loss: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]) -> Step:
    """The step of a batch of image indices, whose loss (``image_loss(model, images)``) is also its objective."""

    def step(model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = image_loss(model, images)
        return loss, loss
    return step
