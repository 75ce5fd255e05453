"""The library's progress bars follow its logging: a tqdm bar on standard error is shown where the module's logger
(``logging.getLogger(__name__)``, under ``midlevel_fast``) is enabled for INFO, unless the caller decides with
``progress=True`` or ``False``. Python's default (WARNING) shows none; the ``midlevel-fast`` command sets INFO
(``-q``: WARNING, so no bars)."""
from __future__ import annotations

import logging
import sys
from typing import Any

from tqdm import tqdm


def progress_wanted(logger: logging.Logger, progress: bool | None) -> bool:
    """``progress`` when given, else whether ``logger`` is enabled for INFO."""
    return logger.isEnabledFor(logging.INFO) if progress is None else bool(progress)


def progress_bar(logger: logging.Logger, progress: bool | None, **tqdm_kw: Any) -> tqdm:
    """A tqdm bar on standard error (``tqdm_kw`` as tqdm's), disabled unless :func:`progress_wanted`."""
    return tqdm(file=sys.stderr, disable=not progress_wanted(logger, progress), **tqdm_kw)
