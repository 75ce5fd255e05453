"""The classification loss of the adaptation head, for one batch of training rows (Oquab et al., section 3.2):
cross-entropy over C + 1 outputs (``"softmax"``, the paper's), or per-output binary cross-entropy on multi-hot
targets (``"multilabel"``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
