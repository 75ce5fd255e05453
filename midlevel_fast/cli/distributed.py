"""Command-line parts for scale-out: the ``score-dir`` subcommand, and ``torchrun`` support for ``cache`` and
``train`` (their options here, their work unchanged in :mod:`midlevel_fast.cli`).

Under ``torchrun`` the wrapped commands join the process group first; :func:`midlevel_fast.training.cache.open_cache`
and :func:`midlevel_fast.training.cache.fill_cache` then shard the cache build, and
:func:`midlevel_fast.training.train.train_head` trains with DDP. Every rank writes the same head file (same bytes,
atomically) and only rank 0's standard output is shown. Without ``torchrun`` they run exactly as before.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from datetime import timedelta
from typing import Callable

_DIST_HELP = "torch.distributed backend under torchrun: auto (nccl with CUDA, else gloo), gloo or nccl"


def _add_dist_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dist-backend", choices=("auto", "gloo", "nccl"), default="auto", help=_DIST_HELP)
    p.add_argument("--dist-timeout", type=float, default=30.0, metavar="MIN",
                   help="minutes a rank may wait for the others (e.g. at the end of its shard)")


def _distributed(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``command`` run inside the process group that torchrun describes (a plain call without torchrun)."""

    def run(args: argparse.Namespace) -> int:
        from midlevel_fast.scaleout.distributed import cleanup, init_distributed

        ctx = init_distributed(args.dist_backend, timedelta(minutes=args.dist_timeout))
        try:
            # Every rank ends with the same summary; rank 0 prints it. Errors still reach stderr from any rank.
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(sys.stdout if ctx.is_main else devnull):
                return command(args)
        finally:
            cleanup(ctx)

    return run


def cmd_score_dir(args: argparse.Namespace) -> int:
    """``score-dir``: exit status 0 when the run completes (unreadable images are listed, not fatal), 2 on a usage
    error."""
    import torch

    from midlevel_fast.scaleout.collection import score_collection
    from midlevel_fast.model import load_model
    from midlevel_fast.scaleout.results import output_paths

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = load_model(args.head, backbone=args.backbone)
        res = score_collection(args.dir, args.out, model, mode=args.mode, k=args.k, top=args.top,
                               full_scores=args.full_scores, maps_dir=args.maps, batch_size=args.batch_size,
                               window_step=args.window_step,
                               num_workers=args.workers, progress=not args.no_progress)
    except (ValueError, ImportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"scored {res.scored} images ({res.images_per_second:.2f} images/s), {res.resumed} already done, "
          f"{res.failed} failed", file=sys.stderr)
    if res.rows is not None:
        errors = f"; {res.errors} unreadable images listed in {output_paths(res.out)[1]}" if res.errors else ""
        print(f"{res.rows} rows in {res.out}{errors}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``score-dir`` to ``subparsers`` and torchrun support to its ``cache`` and ``train`` commands."""
    s = subparsers.add_parser("score-dir", help="score every image of a directory into JSON Lines or Parquet "
                                                "(resumable; shards across ranks under torchrun)")
    s.add_argument("dir", help="directory searched recursively for images")
    s.add_argument("--out", required=True, help="output file, .jsonl or .parquet (Parquet needs pyarrow)")
    s.add_argument("--maps", metavar="DIR", help="write one heat-map overlay PNG per top class into DIR")
    s.add_argument("--mode", choices=("dense", "batched", "naive"), default="dense")
    s.add_argument("--top", type=int, default=5, help="classes per row (and maps per image)")
    s.add_argument("--full-scores", action="store_true", help="also store the score of every class")
    s.add_argument("--workers", type=int, default=2, help="decoding processes per rank (0: decode in-process)")
    s.add_argument("--head", default=None, help="head file, or 'imagenet' (default: as for 'score')")
    s.add_argument("--backbone", default=None, help="backbone name (default: the head's, else efficientnet_lite0)")
    s.add_argument("--k", type=float, default=None, help="power-mean exponent (default: the model's, 5)")
    s.add_argument("--window-step", type=int, default=None, help="dense window step in trunk cells")
    s.add_argument("--batch-size", type=int, default=None, help="patches or windows per forward")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads per rank")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_dist_options(s)
    s.set_defaults(func=_distributed(cmd_score_dir))
    for name in ("cache", "train"):
        p = subparsers.choices.get(name)
        if p is not None:
            _add_dist_options(p)
            p.set_defaults(func=_distributed(p.get_default("func")))
