"""What every ``midlevel-fast`` command shares: its exit statuses, the usage error, the logging flags
(``-q``/``-v``) and the backbone weights (``--weights``)."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from midlevel_fast.model.head import load_head
from midlevel_fast.model.classifier import PatchClassifier, load_model, shipped_head_path

# The exit statuses, the same for every command.
EXIT_OK = 0
EXIT_FAILED = 1  # the run went on to the end, but some inputs (each reported) could not be processed
EXIT_USAGE = 2  # a usage or argument error, or an error the command reports: nothing (more) was done

EXIT_EPILOG = (f"exit status: {EXIT_OK} success; {EXIT_FAILED} some inputs could not be processed (each is "
               f"reported, the others are); {EXIT_USAGE} a usage error or an error the command reports ('error: "
               "...' on standard error, no traceback: a missing or unreadable file, a bad value, a missing optional "
               "dependency)")

# The package's logger: the CLI sets its level; the library's progress bars follow it
# (midlevel_fast.runtime.progress.progress_bar).
PACKAGE_LOGGER = "midlevel_fast"

DEFAULT_BACKBONE = "efficientnet_lite0"
# The backbones whose weights this package neither ships nor installs: --weights is required for them.
WEIGHTS_REQUIRED = {"alexnet": "alexnet has no embedded weights: pass --weights FILE (a torchvision AlexNet state "
                               "dict, e.g. from torchvision.models.alexnet(weights=...).state_dict())"}


class UsageError(ValueError):
    """A command's arguments do not fit together: reported as ``error: ...`` with exit status :data:`EXIT_USAGE`."""


class _Formatter(logging.Formatter):
    """Info lines as they are; other levels prefixed like the CLI's own messages (``warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno == logging.INFO else f"{record.levelname.lower()}: {text}"


def add_logging_options(p: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` and ``-v/--verbose``, read by :func:`configured_logging`."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true",
                       help="warnings and errors only on standard error: no progress bars, no summaries")
    group.add_argument("-v", "--verbose", action="store_true", help="debug messages too")


@contextlib.contextmanager
def configured_logging(args: argparse.Namespace) -> Iterator[None]:
    """While a command runs: the ``midlevel_fast`` logger at INFO (progress bars and summaries on standard error),
    WARNING with ``--quiet``, DEBUG with ``--verbose``, through a handler on the current standard error. The
    logger's level and handlers are restored afterwards, so a program calling :func:`midlevel_fast.cli.main`
    keeps its own logging."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def add_weights_option(p: argparse.ArgumentParser) -> None:
    """``--weights FILE``, read by :func:`backbone_options`."""
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="the backbone's ImageNet weights: required for alexnet (a torchvision AlexNet state dict, "
                        "e.g. saved from torchvision.models.alexnet(weights=...).state_dict()); for "
                        "efficientnet_lite0 a lukemelas-format .pth (default: the installed weight package's)")


def backbone_options(backbone: str, weights: str | os.PathLike | None) -> dict[str, Any]:
    """The factory arguments of ``backbone`` for ``--weights``; :class:`UsageError` for a backbone whose weights
    must be given and were not."""
    if weights is None:
        if backbone in WEIGHTS_REQUIRED:
            raise UsageError(WEIGHTS_REQUIRED[backbone])
        return {}
    return {"weights_path": os.fspath(weights)}


def model_backbone(head: str | os.PathLike | None, backbone: str | None) -> str:
    """The backbone :func:`midlevel_fast.model.classifier.load_model` builds for ``head`` and ``backbone``:
    ``backbone``, else the head file's (the shipped head's for none), else :data:`DEFAULT_BACKBONE`."""
    if backbone is not None:
        return backbone
    path = shipped_head_path() if head is None else None if str(head) == "imagenet" else Path(head)
    # A head that is not a file is reported by load_model, with its hint.
    return load_head(path)[1].backbone if path is not None and path.is_file() else DEFAULT_BACKBONE


def refuse_weights_required(head: str | os.PathLike, command: str) -> None:
    """:class:`UsageError` where ``head``'s backbone needs ``--weights``, which ``command`` does not take (its library
    function builds the backbone from the head's name alone): refused before any work, with the way out."""
    backbone = model_backbone(head, None)
    if backbone in WEIGHTS_REQUIRED:
        raise UsageError(f"{command}: the head {head} is on {backbone}, whose weights {command} cannot take yet (it "
                         f"has no --weights); for a box regression, train the head with --task boxes and --weights "
                         f"FILE; or use a head on efficientnet_lite0")


def load_cli_model(head: str | os.PathLike | None, backbone: str | None,
                   weights: str | os.PathLike | None) -> PatchClassifier:
    """:func:`midlevel_fast.model.classifier.load_model` with the backbone weights of ``--weights``, refused up
    front where they are needed and missing."""
    return load_model(head, backbone=backbone, **backbone_options(model_backbone(head, backbone), weights))
