"""The files of a collection's result table: JSON Lines or Parquet rows, per-rank append-only parts, the merge.

Files, for ``out = scores.jsonl`` (or ``scores.parquet``)::

    scores.jsonl                    the result: one row per scored image, sorted by path
    scores.meta.json                how the rows were scored: {"mode", "k", "backbone", "detection_threshold",
                                    "class_names"}
    scores.errors.jsonl             images that could not be read or scored, {"path", "error"}; absent when none
    scores.jsonl.parts/rank<r>.jsonl    append-only JSON Lines logs of a run in progress, one per rank

Crash safety: a rank appends each row to its part with one write and flushes it (``fsync`` at most once a
second), so ``kill -9`` leaves at most one truncated last line. The next writer of that part cuts such a line off
before appending, readers ignore unparsable lines, and the merge keeps one row per path (a success over an
error), so a row is never torn or duplicated. ``out`` and the errors file are written to temporaries and renamed;
the parts are removed only after both are in place. Parts are JSON Lines whatever ``out`` is.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

from midlevel_fast.io.files import atomic_write, atomic_write_bytes
from midlevel_fast.scaleout.rows import current_row

log = logging.getLogger(__name__)

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_FSYNC_SECONDS = 1.0


def read_part(path: Path) -> Iterator[dict]:
    """Complete, parsable rows of ``path``; a truncated last line (a killed writer) and garbage are skipped."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict) and isinstance(row.get("path"), str):
                yield row
            elif line.strip():
                log.warning("%s:%d: ignoring an unreadable line", path, number)


def pyarrow_modules() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or an ``ImportError`` that says how to get them."""
    # pyarrow is optional (the [parquet] extra): imported only when a Parquet file is written or read.
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("writing Parquet needs pyarrow: pip install 'midlevel_fast[parquet]', "
                          "or write JSON Lines (an output ending in .jsonl)") from None
    return pa, pq


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of an output file (``.jsonl``/``.ndjson`` or ``.parquet``); ``[]`` when it does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    if output_format(path) == "parquet":
        _, pq = pyarrow_modules()
        return [{k: v for k, v in row.items() if v is not None} for row in pq.read_table(path).to_pylist()]
    return list(read_part(path))


def output_format(out: Path) -> str:
    """``"jsonl"`` or ``"parquet"`` from the suffix of ``out``; ``ValueError`` for any other suffix."""
    try:
        return FORMATS[out.suffix.lower()]
    except KeyError:
        raise ValueError(f"output {str(out)!r}: the suffix must be one of {sorted(FORMATS)}") from None


def write_rows(path: Path, rows: list[dict]) -> None:
    """Replaces ``path`` (format from its suffix) with ``rows``, atomically."""
    if output_format(path) == "parquet":
        pa, pq = pyarrow_modules()
        columns = list(dict.fromkeys(k for row in rows for k in row))
        # from_pylist takes its columns from the first row: give every row all of them.
        table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
        return

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    atomic_write(path, write)


class PartWriter:
    """Append-only JSON Lines log of one rank, the only writer of ``path``; see the module docstring for why each
    step is there. A context manager: leaving it closes the file (flushed and synced)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "ab")
        self._cut_torn_line()
        self._synced = time.monotonic()

    def _cut_torn_line(self) -> None:
        size = self._file.seek(0, os.SEEK_END)
        with open(self.path, "rb") as f:
            end = size
            while end > 0:
                start = max(0, end - 65536)
                f.seek(start)
                newline = f.read(end - start).rfind(b"\n")
                if newline >= 0:
                    end = start + newline + 1
                    break
                end = start
        if end != size:
            log.warning("%s: cutting off a truncated last line (a killed run)", self.path)
            self._file.truncate(end)
            self._file.seek(end)

    def write(self, row: dict) -> None:
        self._file.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
        self._file.flush()
        if time.monotonic() - self._synced >= _FSYNC_SECONDS:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def output_paths(out: Path) -> tuple[Path, Path, Path]:
    """The parts folder, the errors file and the meta file of ``out``."""
    return (out.with_name(out.name + ".parts"), out.with_name(out.stem + ".errors.jsonl"),
            out.with_name(out.stem + ".meta.json"))


def merge_outputs(out: str | os.PathLike) -> tuple[int, int]:
    """Merges the rows already in ``out`` and every part into ``out`` (one row per path, sorted, in the current
    schema: :func:`midlevel_fast.scaleout.rows.current_row`), rewrites the errors file (paths with no successful
    row), removes the parts; returns ``(rows, errors)``. Needs no rank writing at the same time."""
    out = Path(out)
    parts, errors_path, _ = output_paths(out)
    good: dict[str, dict] = {}
    failed: dict[str, dict] = {}
    for row in read_rows(out):
        good.setdefault(row["path"], row)
    for part in sorted(parts.glob("rank*.jsonl")) if parts.is_dir() else []:
        for row in read_part(part):
            if "error" in row:
                failed[row["path"]] = row
            else:
                good.setdefault(row["path"], row)
    errors = [failed[p] for p in sorted(failed) if p not in good]
    write_rows(out, [current_row(good[p]) for p in sorted(good)])
    if errors:
        write_rows(errors_path, errors)
    else:
        errors_path.unlink(missing_ok=True)
    if parts.is_dir():
        shutil.rmtree(parts)
    return len(good), len(errors)


def check_meta(out: Path, meta: dict, writer: bool) -> None:
    """Refuses ``meta`` (how this run scores) when ``out`` already has rows scored otherwise; else records it in
    the meta file if ``writer`` (rank 0)."""
    parts, _, path = output_paths(out)
    recorded = json.loads(path.read_text()) if path.exists() else None
    if recorded is not None and recorded != meta and (out.exists() or parts.exists()):
        diff = {k: (recorded.get(k), v) for k, v in meta.items() if k != "class_names" and recorded.get(k) != v}
        raise ValueError(f"{out} was scored with other settings (recorded, requested): "
                         f"{diff or 'other class names'}; write to another output or delete the old one")
    if recorded != meta and writer:
        atomic_write_bytes(path, json.dumps(meta, ensure_ascii=False).encode())


def scored_paths(out: Path) -> set[str]:
    """Paths already scored in ``out`` or in any part."""
    parts, _, _ = output_paths(out)
    done = {row["path"] for row in read_rows(out)}
    for part in sorted(parts.glob("rank*.jsonl")) if parts.is_dir() else []:
        done.update(row["path"] for row in read_part(part) if "error" not in row)
    return done
