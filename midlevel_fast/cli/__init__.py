"""``midlevel-fast``: command-line entry point.

One module per command group (:mod:`~midlevel_fast.cli.score`: ``score``; :mod:`~midlevel_fast.cli.score_dir`:
``score-dir``; :mod:`~midlevel_fast.cli.boxes`: ``score-boxes``; :mod:`~midlevel_fast.cli.voc`: ``cache``,
``train``, ``fit-boxes``, ``eval``, their arguments declared in :mod:`~midlevel_fast.cli.voc_args`;
:mod:`~midlevel_fast.cli.calibrate`: ``calibrate``), each parsing its arguments and calling library functions (the
jobs themselves are in :mod:`midlevel_fast.recipes`); :mod:`~midlevel_fast.cli.distributed` adds ``torchrun``
support to the commands that shard.

Exit statuses (:mod:`~midlevel_fast.cli.common`, also in ``--help``): 0 on success; 1 when some inputs could not be
processed (``score``: images, each reported, the others scored); 2 on a usage error or an error the command reports
(``error: ...`` on standard error, no traceback: a missing or unreadable file, a bad value, a missing optional
dependency). Every command takes ``-q`` (warnings and errors only, no progress bars) and ``-v`` (debug messages).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import torch

from midlevel_fast import __version__
from midlevel_fast.cli import boxes, calibrate, score, score_dir, voc
from midlevel_fast.cli.common import EXIT_EPILOG, EXIT_USAGE, add_logging_options, configured_logging

# What a command reports as "error: ..." rather than as a traceback: the user's files, values and extras.
REPORTED_ERRORS = (ValueError, ImportError, OSError)


def build_parser() -> argparse.ArgumentParser:
    """The ``midlevel-fast`` parser with every command group's subcommands."""
    parser = argparse.ArgumentParser(prog="midlevel-fast", description="Mid-level CNN patch features (Oquab et al., "
                                     "CVPR 2014): score images, cache features, train and calibrate heads.",
                                     epilog=EXIT_EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    score.register(sub)
    score_dir.register(sub)
    boxes.register(sub)
    voc.register(sub)
    calibrate.register(sub)
    for command in sub.choices.values():
        add_logging_options(command)
        command.epilog = EXIT_EPILOG
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command of ``argv`` (default ``sys.argv[1:]``) and returns its exit status."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with configured_logging(args):
        try:
            return args.func(args)
        except REPORTED_ERRORS as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
