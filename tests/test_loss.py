"""The head's batch loss against values worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from midlevel_fast.training.loss import batch_loss


@pytest.mark.parametrize("rows, outputs", [(1, 2), (5, 21)])
def test_loss_of_uninformed_logits(rows, outputs):
    logits = torch.zeros(rows, outputs, dtype=torch.float64)
    # Uniform softmax: -log(1/outputs) per row, whatever the class.
    targets = torch.arange(rows) % outputs
    assert batch_loss(logits, targets, "softmax").item() == pytest.approx(math.log(outputs), rel=1e-12)
    # Sigmoid 1/2 everywhere: log 2 per output, summed over the outputs (not averaged), whatever the targets.
    hot = torch.zeros(rows, outputs, dtype=torch.float64)
    hot[:, 0] = 1
    assert batch_loss(logits, hot, "multilabel").item() == pytest.approx(outputs * math.log(2), rel=1e-12)


def test_confident_logits_and_global_batches():
    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    right, wrong = torch.tensor([0, 1]), torch.tensor([1, 0])
    per_row_right, per_row_wrong = math.log(1 + math.exp(-4)), math.log(1 + math.exp(4))
    assert batch_loss(logits, right, "softmax").item() == pytest.approx(per_row_right, rel=1e-12)
    assert batch_loss(logits, wrong, "softmax").item() == pytest.approx(per_row_wrong, rel=1e-12)
    # Two rows of a global batch of 10 rows on one of 4 ranks: 4/10 of the slice's sum, so the ranks' mean is
    # the global batch's mean.
    assert batch_loss(logits, right, "softmax", (10, 4)).item() == pytest.approx(2 * per_row_right * 4 / 10,
                                                                                rel=1e-12)
    # Multi-label, each row right on its class (log(1 + e^-4)) and undecided on the other (log 2).
    assert batch_loss(logits, torch.eye(2, dtype=torch.float64), "multilabel", (10, 4)).item() == pytest.approx(
        2 * (per_row_right + math.log(2)) * 4 / 10, rel=1e-12)
