"""The parts of :func:`midlevel_fast.training.train.train_head`'s epoch loop: one pass over the shuffled rows, the
paper's learning-rate schedule, and the rule that keeps the best validation epoch."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from midlevel_fast.runtime.train_ddp import Replica
from midlevel_fast.training.steps import Step


def run_epoch(trained: torch.nn.Module, model: torch.nn.Module, step: Step, opt: torch.optim.Optimizer, n: int,
              batch_size: int, generator: torch.Generator, replica: Replica | None) -> float:
    """One pass over ``n`` rows (or images) in an order drawn from ``generator``, ``batch_size`` at a time, with
    ``model`` (``trained`` itself, or its DDP wrapper): the mean loss per row over all ranks."""
    trained.train()
    order = torch.randperm(n, generator=generator)
    total = 0.0
    for s in range(0, n, batch_size):
        idx = order[s: s + batch_size]
        loss, objective = step(model, idx)
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
        total += loss.item() * len(idx)
    # A replica's loss is its slice's share scaled by world_size, so the mean over ranks is the global total.
    return (total if replica is None else replica.mean(total)) / n


@dataclass
class LrSchedule:
    """The paper's schedule: the learning rate ``lr`` is divided by 10 each time an epoch's loss is not below the
    best so far by the relative ``min_improvement``, ``drops`` times; the next such epoch ends training."""

    lr: float
    drops: int
    min_improvement: float
    best_loss: float = math.inf

    def stop_after(self, epoch_loss: float, opt: torch.optim.Optimizer) -> bool:
        """Whether training ends after an epoch of mean loss ``epoch_loss``; else divides the rate of every
        parameter group of ``opt`` (and ``lr``) by 10 when the loss stopped falling."""
        if epoch_loss > self.best_loss * (1 - self.min_improvement):
            if self.drops == 0:
                return True
            self.drops -= 1
            self.lr /= 10
            for group in opt.param_groups:
                group["lr"] /= 10
        self.best_loss = min(self.best_loss, epoch_loss)
        return False


@dataclass
class BestEpoch:
    """The keep-best rule: the epoch of the highest validation mAP (a NaN mAP ranks below any number, as in
    ``max()``), among equal ones the first, or the one where ``tie_break(model)`` is highest; its weights copied."""

    tie_break: Callable[[torch.nn.Module], float] | None
    epoch: int = -1
    val_map: float = float("nan")
    state: dict[str, Any] | None = None
    key: tuple[float, float] = (-math.inf, -math.inf)

    def offer(self, epoch: int, val_map: float, model: torch.nn.Module) -> None:
        """Keeps ``epoch`` (and a copy of ``model``'s weights) when it ranks above the best so far; ``tie_break``
        sees ``model`` in eval mode."""
        value = val_map if not math.isnan(val_map) else -math.inf
        key = (value, self.tie_break(model.eval()) if self.tie_break is not None else 0.0)
        if key > self.key:
            self.key, self.epoch, self.val_map = key, epoch, val_map
            self.state = copy.deepcopy(model.state_dict())
