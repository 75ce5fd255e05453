"""Reading a text or JSON file a user hands us: UTF-8 text and strict JSON, or a ``ValueError`` naming the file.

Strict JSON here means what Python's :mod:`json` lets through and no reader of ours wants: ``NaN``,
``Infinity`` and numbers too large for a float (``1e400`` parses to ``inf``, a 400-digit integer cannot become a
float) are refused, and so is nesting deep enough to exhaust Python's recursion limit."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

# More digits than a float holds (its maximum is about 1.8e308): such an integer cannot be a coordinate or a size.
_MAX_INT_DIGITS = 308


class _Refused(Exception):
    """A number the JSON hooks below refuse; turned into the ValueError naming the file."""


def read_user_text(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of ``path``; ``ValueError`` ``"<what>: cannot read it (...)"`` when it is unreadable or not
    UTF-8. ``what`` names the file in messages (e.g. ``"--boxes-file boxes.json"``)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{what}: cannot read it ({e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what}: cannot read it: not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})"
                         ) from None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text!r} is too large for a float")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _Refused(f"integer of {len(text)} digits is too large")
    return int(text)


def _no_constant(text: str) -> Any:
    raise _Refused(f"{text} is not a number JSON allows")


def read_user_json(path: str | os.PathLike, what: str) -> Any:
    """The strict JSON (see the module docstring) in the UTF-8 file ``path``; ``ValueError`` naming ``what``
    otherwise: unreadable, not UTF-8, not JSON (with the line and column), a refused number, or nested too deep."""
    text = read_user_text(path, what)
    try:
        return json.loads(text, parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_no_constant)
    except (json.JSONDecodeError, _Refused) as e:
        raise ValueError(f"{what}: not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{what}: not valid JSON (nested too deep)") from None
