"""DDP training of the head over 2 torchrun CPU ranks (gloo) against a single process, for both objectives, the
consistency term and image-level labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from midlevel_fast.training.train import train_head
from tests.distributed_worker import TRAIN_CONFIGS, synthetic_rows, train_inputs
from tests.helpers import run_worker

# Weights of a 2-rank DDP run against a single process (fp32, dropout 0.5, 4 epochs): equal up to float32
# summation order, about 3e-8 here. Ranks drawing their own dropout masks instead would miss by about 1e-2.
PARITY_ATOL, PARITY_RTOL = 1e-6, 1e-5


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One torchrun launch: DDP training of each config (both objectives, the consistency term, image labels)."""
    tmp = tmp_path_factory.mktemp("ddp")
    proc = run_worker("train", str(tmp), cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp


@pytest.mark.parametrize("name", list(TRAIN_CONFIGS))
def test_ddp_training_matches_a_single_process(two_ranks, name):
    config = TRAIN_CONFIGS[name]
    train, val, pairs = train_inputs(name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train_head(train, 3, config, val, log=None, data_parallel=False, pairs=pairs)
    finally:
        torch.set_num_threads(threads)
    ranks = [torch.load(two_ranks / f"{name}{r}.pt") for r in range(2)]
    for name, value in single.head.state_dict().items():
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name])  # the ranks agree exactly
        torch.testing.assert_close(ranks[0]["state"][name], value, atol=PARITY_ATOL, rtol=PARITY_RTOL)
    assert ranks[0]["best_epoch"] == single.best_epoch
    got = [(h["epoch"], h["lr"]) for h in ranks[0]["history"]]
    assert got == [(h["epoch"], h["lr"]) for h in single.history]
    np.testing.assert_allclose([h["loss"] for h in ranks[0]["history"]], [h["loss"] for h in single.history],
                               rtol=1e-5)
    assert single.history[-1]["loss"] < single.history[0]["loss"]


def test_data_parallel_needs_a_process_group():
    train, _ = synthetic_rows(n=20)
    with pytest.raises(RuntimeError, match="process group"):
        train_head(train, 3, TRAIN_CONFIGS["softmax"], log=None, data_parallel=True)
