"""Data-parallel training of the adaptation head with ``DistributedDataParallel`` (used by
:func:`midlevel_fast.training.train.train_head` under an initialised ``torch.distributed`` group of several ranks).

Parity with a single-process run, by construction:

* every rank holds the whole training set and draws the same seeded epoch order, so the *global* batches are the
  single-process batches; rank ``r`` computes rows ``tensor_split(batch, world)[r]`` of each (an empty slice is
  fine). With the consistency term a step forwards the rows and both sides of the pairs as one concatenation;
  each part is split the same way. With image-level labels a batch is of images, split the same way, and a rank
  forwards all the windows of its images (:meth:`Replica.groups`);
* dropout masks are drawn for the whole global batch on every rank, from the same seeded generator and with the
  same call as the single-process ``nn.Dropout``, and each rank keeps its rows, so the union of the ranks' masks is
  the single-process mask (a rank that drew only its own rows would consume the random stream differently);
* each rank back-propagates its *summed* loss times ``world / global_rows`` (per output for the multi-label
  objective); DDP averages gradients over ranks, which gives the gradient of the global-batch mean;
* the epoch loss that drives the learning-rate schedule is averaged over ranks, so every rank takes the same
  decisions, and the all-reduced gradients keep the weights identical on every rank.

What remains is summation order (a gradient is a sum of per-rank partial sums), so the weights match the
single-process ones to float32 rounding (about 1e-6 relative after a few epochs), not bit for bit. With
``TrainConfig.bf16`` the matrix products round to bfloat16 and the match is looser. The training loop is CPU
only: on a ``nccl`` group the gradients are reduced over a separate ``gloo`` group.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from midlevel_fast.runtime.distributed import DistContext, current


class _GlobalBatchDropout(nn.Dropout):
    """``nn.Dropout`` whose training mask is drawn for the replica's whole global batch and then sliced."""

    def __init__(self, p: float, replica: "Replica"):
        super().__init__(p)
        self.replica = replica

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.replica.batch is None:
            return super().forward(x)
        rows, mine = self.replica.batch
        mask = F.dropout(torch.ones((rows, *x.shape[1:]), dtype=x.dtype, device=x.device), self.p, True)
        return x * mask[mine]


class Replica:
    """This rank's part in data-parallel training: which rows of each global batch it computes, its DDP wrapper
    and the reductions that keep all ranks in step (see the module docstring)."""

    def __init__(self, ctx: DistContext):
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("data-parallel training needs an initialised torch.distributed process group "
                               "(launch with torchrun and call midlevel_fast.runtime.distributed.init_distributed())")
        self.ctx = ctx
        self.world_size = ctx.world_size
        # The loop runs on CPU tensors, which nccl cannot reduce.
        self.group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
        # (rows of the global forward, positions of this rank's rows in it)
        self.batch: tuple[int, torch.Tensor] | None = None

    def wrap(self, head: nn.Module) -> nn.Module:
        """Swaps ``head``'s dropout layers for global-batch ones (in place) and returns it wrapped in DDP."""
        for parent in list(head.modules()):
            for name, child in parent.named_children():
                if type(child) is nn.Dropout:
                    setattr(parent, name, _GlobalBatchDropout(child.p, self))
        return DistributedDataParallel(head, process_group=self.group)

    def unwrap(self, head: nn.Module) -> None:
        """Puts plain ``nn.Dropout`` layers back into ``head``."""
        self.batch = None
        for parent in list(head.modules()):
            for name, child in parent.named_children():
                if isinstance(child, _GlobalBatchDropout):
                    setattr(parent, name, nn.Dropout(child.p))

    def rows(self, *batches: torch.Tensor) -> list[torch.Tensor]:
        """This rank's slice of each global batch (indices of rows), for one forward over their concatenation."""
        mine, positions, offset = [], [], 0
        for batch in batches:
            size, extra = divmod(len(batch), self.world_size)
            rank = self.ctx.rank
            start = rank * size + min(rank, extra)
            stop = start + size + int(rank < extra)
            mine.append(batch[start:stop])
            positions.append(torch.arange(offset + start, offset + stop))
            offset += len(batch)
        self.batch = (offset, torch.cat(positions))
        return mine

    def groups(self, batch: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global batch of groups (images), each of ``sizes`` rows (windows) that one forward
        takes in order: the groups are split as :meth:`rows` splits rows, and dropout masks are drawn for all the
        rows of the global batch."""
        (mine,) = self.rows(batch)
        if self.batch is None:
            raise RuntimeError("rows() set no batch: groups() needs the positions it records")
        _, positions = self.batch
        first = int(sizes[: int(positions[0])].sum()) if len(positions) else 0
        self.batch = (int(sizes.sum()), torch.arange(first, first + int(sizes[positions].sum())))
        return mine

    def mean(self, value: float) -> float:
        """``value`` averaged over the ranks (float64, the same result on every rank)."""
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, group=self.group)
        return float(t.item()) / self.world_size


def replica_for(data_parallel: bool | None) -> Replica | None:
    """The replica of this rank for ``train_head(data_parallel=...)``: ``None`` (auto) gives one when an
    initialised group has several ranks, ``True`` requires a group, ``False`` gives none."""
    if data_parallel is False:
        return None
    ctx = current()
    if ctx.distributed or data_parallel:
        return Replica(ctx)
    return None
