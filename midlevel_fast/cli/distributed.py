"""``torchrun`` support for the commands that shard their work (``cache``, ``train``, ``score-dir``): their options,
and the wrapper that runs a command inside the process group, applied where each command's parser is built.

Under ``torchrun`` a wrapped command joins the process group first; then
:func:`midlevel_fast.cache.build.open_cache` and :func:`midlevel_fast.cache.build.fill_cache`
shard the cache build, :func:`midlevel_fast.training.train.train_head` trains with DDP and
:func:`midlevel_fast.scaleout.collection.score_collection` shards the images. Every rank writes the same head file
(same bytes, atomically) and only rank 0's standard output is shown. Without ``torchrun`` the commands run as a
single process.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from datetime import timedelta
from typing import Callable

from midlevel_fast.runtime.distributed import process_group

Command = Callable[[argparse.Namespace], int]

_DIST_HELP = "torch.distributed backend under torchrun: auto (nccl with CUDA, else gloo), gloo or nccl"


def add_distributed_options(p: argparse.ArgumentParser) -> None:
    """``--dist-backend`` and ``--dist-timeout``, read by :func:`distributed`."""
    p.add_argument("--dist-backend", choices=("auto", "gloo", "nccl"), default="auto", help=_DIST_HELP)
    p.add_argument("--dist-timeout", type=float, default=30.0, metavar="MIN",
                   help="minutes a rank may wait for the others (e.g. at the end of its shard)")


def distributed(command: Command) -> Command:
    """``command`` run inside the process group that torchrun describes (a plain call without torchrun); its
    parser needs :func:`add_distributed_options`."""

    def run(args: argparse.Namespace) -> int:
        with process_group(args.dist_backend, timedelta(minutes=args.dist_timeout)) as ctx:
            # Every rank ends with the same summary; rank 0 prints it. Errors still reach stderr from any rank.
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(sys.stdout if ctx.is_main else devnull):
                return command(args)

    return run
