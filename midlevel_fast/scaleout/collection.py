"""Scoring a collection of images into one table, resumable after a kill and sharded across ``torchrun`` ranks.

Output files (``out``, its ``.meta.json``, ``.errors.jsonl`` and per-rank parts) and their crash safety are
described in :mod:`midlevel_fast.scaleout.results`.

Row (:mod:`midlevel_fast.scaleout.rows`): ``{"path", "mode", "k", "backbone", "detection_threshold",
**ScoreResult.to_dict(top)}``, plus ``scores`` with ``full_scores`` and ``maps`` with ``maps_dir``. ``path`` is relative
to the directory when a directory is scored (POSIX separators), else the path as given; it is the key for resuming
and merging. A run whose settings differ from the meta file's refuses to add to an existing output.

Pipeline: a ``DataLoader`` with ``num_workers`` processes decodes images ahead of the model. In dense mode on a
GPU, ``batch_images`` decoded images at a time go through :func:`midlevel_fast.scoring.images.score_images`, which
stacks their planes of equal size into one trunk call; elsewhere images are scored one at a time
(:func:`midlevel_fast.scoring.score.score_image` batches the patches or windows of each; on the CPU batching
across images was measured slower). A row is appended to the rank's part after the image's maps are on disk, so
``kill -9`` loses at most the images in flight. The workers die with the process that started them
(:func:`_die_with_parent`), so a killed run leaves none behind.

Failures: a file that cannot be decoded or scored is logged (``logging`` warning ``skipped PATH: REASON``) and
recorded in the errors file, and the run goes on. ``REASON`` (the ``error`` of the errors file) says which:
``unreadable: ...`` when decoding failed, ``refused: ...`` when scoring refused the image (too small, or too
elongated for the dense mode), with the message. Failed images are retried by the next run, so a fixed file or a
transient read error heals; a row in ``out`` means the image was scored.

Resume and sharding: every rank lists the inputs (sorted; all ranks must see the same list, which is checked),
takes its share with :func:`midlevel_fast.runtime.distributed.shard`, and skips the images that already have a row in
``out`` or in any part, whatever world size wrote it. After a barrier rank 0 merges ``out`` and all parts into
``out``. Ranks need a shared filesystem for ``out``'s directory.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from midlevel_fast.io.image_io import load_image
from midlevel_fast.viz.overlay import map_stems
from midlevel_fast.model.classifier import PatchClassifier, default_model
from midlevel_fast.runtime.precision import Precision
from midlevel_fast.runtime.progress import progress_bar
from midlevel_fast.runtime.distributed import DistContext, all_gather_objects, barrier, current, shard
from midlevel_fast.scaleout.rows import collection_row
from midlevel_fast.scaleout.results import (PartWriter, check_meta, merge_outputs, output_format, output_paths,
                                            pyarrow_modules, scored_paths)
from midlevel_fast.scoring.images import GPU_BATCH_IMAGES, score_images
from midlevel_fast.scoring.result import ScoreResult
from midlevel_fast.scoring.options import DEFAULTS, Mode, ScoreOptions
from midlevel_fast.scoring.score import score_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


@dataclass
class CollectionResult:
    """What one rank did: ``scored`` images scored now, ``resumed`` images of its share found already scored,
    ``failed`` images of its share that could not be read or scored, ``seconds`` of its scoring loop;
    ``rows``/``errors``: lines of the merged ``out`` and errors file (rank 0 only, else ``None``)."""

    out: Path
    scored: int
    resumed: int
    failed: int
    seconds: float
    rows: int | None = None
    errors: int | None = None

    @property
    def images_per_second(self) -> float:
        """Images this rank scored per second of its scoring loop."""
        return self.scored / self.seconds if self.seconds > 0 else 0.0


def list_images(inputs: str | os.PathLike | Sequence[str | os.PathLike],
                exclude: Sequence[Path] = ()) -> list[tuple[str, Path]]:
    """``(key, path)`` of the images to score, sorted by key.

    A directory is searched recursively for files with an image suffix (hidden files and folders and anything
    under ``exclude`` are left out); keys are paths relative to it. A sequence of paths is taken as given
    (duplicates removed), keys are the paths as strings.
    """
    if isinstance(inputs, (str, os.PathLike)):
        root = Path(inputs)
        if not root.is_dir():
            raise NotADirectoryError(f"{str(root)!r} is not a directory; pass a directory or a list of image paths")
        base = root.resolve()
        skip = [s.resolve().relative_to(base).parts for s in exclude if s.resolve().is_relative_to(base)]
        found = []
        for path in root.rglob("*"):
            rel = path.relative_to(root).parts
            if (path.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in rel)
                    and not any(rel[: len(s)] == s for s in skip) and path.is_file()):
                found.append(("/".join(rel), path))
        return sorted(found)
    return sorted({os.fspath(p): Path(p) for p in inputs}.items())


class _Decode(torch.utils.data.Dataset):
    """Decodes in DataLoader workers: ``(key, rgb uint8 HWC or None, error or None)``."""

    def __init__(self, items: Sequence[tuple[str, Path]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray | None, str | None]:
        key, path = self.items[i]
        try:
            return key, load_image(path), None
        except Exception as e:  # one bad file must never stop the run
            return key, None, str(e) or type(e).__name__


def _as_is(sample: Any) -> Any:
    return sample


# Linux prctl option: the signal this process gets when the thread that created it exits.
_PR_SET_PDEATHSIG = 1
# Seconds between the fallback's checks that the parent is alive.
_PARENT_POLL = 0.5


def _parent_death_signal() -> bool:
    """Asks the kernel to SIGKILL this process when its parent dies (Linux); ``False`` where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent(parent: int, worker_id: int = 0) -> None:
    """``worker_init_fn`` of the decoding workers: they exit when ``parent`` (the scoring process) dies.

    After a ``kill -9`` of the scoring process, a worker whose queue holds a decoded image otherwise never exits:
    it leaves the DataLoader's loop (torch's watchdog sees the new parent) but then waits forever for its queue's
    feeder thread, blocked writing to a pipe that nobody reads but whose read end the workers (forked with it)
    still hold. So: a parent-death SIGKILL (Linux ``prctl(PR_SET_PDEATHSIG)``; the kernel sends it when the thread
    that forked the worker exits, here the thread iterating the loader, i.e. the scoring loop) when the worker was
    forked by ``parent`` itself, and else (no prctl, or a ``forkserver``/``spawn`` start method, where the kernel
    would watch the wrong parent) a daemon thread polling the parent's liveness every :data:`_PARENT_POLL` s
    (``os.getppid()`` changed, or ``parent`` gone). Both end the worker at once (SIGKILL, ``os._exit``): it holds
    nothing worth flushing."""
    ppid = os.getppid()
    if ppid == parent and _parent_death_signal():
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == ppid and _alive(parent):
            time.sleep(_PARENT_POLL)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def score_collection(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    model: PatchClassifier | None = None,
    *,
    mode: Mode = DEFAULTS.mode,
    k: float | None = DEFAULTS.k,
    top: int = 5,
    full_scores: bool = False,
    maps_dir: str | os.PathLike | None = None,
    batch_size: int | None = DEFAULTS.batch_size,
    window_step: int | None = DEFAULTS.window_step,
    precision: Precision = DEFAULTS.precision,
    detection_threshold: float = DEFAULTS.detection_threshold,
    num_workers: int = 2,
    progress: bool | None = None,
    ctx: DistContext | None = None,
    batch_images: int | None = None,
) -> CollectionResult:
    """Scores every image of ``inputs`` (a directory or a list of paths) into ``out`` (see the module docstring).

    ``model``: a :class:`midlevel_fast.model.classifier.PatchClassifier` (default: the default model). ``mode``, ``k``,
    ``batch_size`` (patches or windows per forward), ``window_step``, ``precision`` and ``detection_threshold`` (the
    least score of a row's detections) are :func:`midlevel_fast.scoring.score.score_image`'s. ``batch_images``:
    images scored together (module docstring; ``None``: :data:`midlevel_fast.scoring.images.GPU_BATCH_IMAGES` in
    dense mode on a GPU, else 1); the rows are the same either way, to the rounding of batched convolutions, and a
    chunk with a refused image is scored again image by image.
    ``top``: classes per row (and maps per image with ``maps_dir``). ``num_workers``: DataLoader processes
    decoding ahead of the model (0: decode in this process). ``progress``: a tqdm bar over the images (``None``:
    where this module's logger is enabled for INFO, :func:`midlevel_fast.runtime.progress.progress_bar`). ``ctx``:
    the rank of this process (default: from the initialised ``torch.distributed`` group, else a single process);
    every rank must call this with the same arguments.
    """
    out = Path(out)
    if output_format(out) == "parquet":
        pyarrow_modules()
    ctx = current() if ctx is None else ctx
    # Checked here, as score_image's ValueErrors otherwise count as a failure of every image.
    options = ScoreOptions(mode=mode, k=k, return_maps=top, window_step=window_step, precision=precision,
                           detection_threshold=detection_threshold, device=ctx.device, batch_size=batch_size)
    if top < 1 or (batch_images is not None and batch_images < 1):
        raise ValueError(f"need top >= 1 and batch_images >= 1; got top {top}, batch_images {batch_images}")
    model = default_model(ctx.device) if model is None else model.to(ctx.device).eval()
    settings = {"mode": mode, "k": float(model.info.k if k is None else k), "backbone": model.info.backbone,
                "detection_threshold": float(detection_threshold)}
    parts, _, _ = output_paths(out)
    maps = Path(maps_dir) if maps_dir is not None else None
    items = list_images(inputs, exclude=[parts] + ([maps] if maps else []))
    digest = hashlib.sha1("\n".join(key for key, _ in items).encode()).hexdigest()
    if len(set(all_gather_objects(digest))) > 1:
        raise RuntimeError(f"the ranks see different lists of images in {inputs!r}; they need the same files "
                           "(a shared filesystem, or identical copies)")
    out.parent.mkdir(parents=True, exist_ok=True)
    check_meta(out, {**settings, "class_names": list(model.class_names)}, writer=ctx.is_main)
    done = scored_paths(out)
    # Map names from the whole list, the same on every rank: images differing only by suffix get apart.
    stems = map_stems([key for key, _ in items]) if maps else {}
    mine = shard(items, ctx.rank, ctx.world_size)
    todo = [(key, path) for key, path in mine if key not in done]
    result = CollectionResult(out, scored=0, resumed=len(mine) - len(todo), failed=0, seconds=0.0)
    if result.resumed:
        log.info("rank %d: %d of its %d images already scored", ctx.rank, result.resumed, len(mine))
    loader = torch.utils.data.DataLoader(_Decode(todo), batch_size=None, num_workers=num_workers if todo else 0,
                                         collate_fn=_as_is,
                                         worker_init_fn=functools.partial(_die_with_parent, os.getpid()))
    writer = PartWriter(parts / f"rank{ctx.rank:05d}.jsonl")
    desc = f"scoring (rank {ctx.rank}/{ctx.world_size})" if ctx.distributed else "scoring"
    if batch_images is None:
        batch_images = GPU_BATCH_IMAGES if mode == "dense" and torch.device(ctx.device).type == "cuda" else 1

    def score_one(image: np.ndarray) -> ScoreResult | str:
        try:
            return score_image(image, model, **options.as_kwargs())
        except ValueError as e:  # too small, too elongated for the mode: the image, not the run
            return f"refused: {e}"

    def score_chunk(chunk: list[tuple[str, np.ndarray]]) -> Sequence[ScoreResult | str]:
        if len(chunk) > 1:
            try:
                return score_images([image for _, image in chunk], model, batch_images=len(chunk), workers=0,
                                    mode=mode, k=k, return_maps=top, device=ctx.device, window_step=window_step,
                                    precision=precision, detection_threshold=options.detection_threshold)
            except ValueError:
                # One of them is refused. score_images checks every image of a chunk before its trunk runs, so
                # nothing was computed yet: find which, image by image.
                pass
        return [score_one(image) for _, image in chunk]

    def skip(key: str, reason: str) -> None:
        log.warning("skipped %s: %s", key, reason)
        writer.write({"path": key, "error": reason})
        result.failed += 1
        bar.update()

    def record(key: str, image: np.ndarray, outcome: ScoreResult | str) -> None:
        if isinstance(outcome, str):
            skip(key, outcome)
            return
        writer.write(collection_row(key, outcome, settings, top, full_scores, maps, image, stems.get(key)))
        result.scored += 1
        bar.update()

    pending: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        for (key, image), outcome in zip(pending, score_chunk(pending)):
            record(key, image, outcome)
        pending.clear()

    start = time.perf_counter()
    try:
        with (progress_bar(log, progress, total=len(todo), unit="img", desc=desc, smoothing=0.1) as bar,
              logging_redirect_tqdm()):
            for key, image, error in loader:
                if error is not None:
                    skip(key, f"unreadable: {error}")
                    continue
                pending.append((key, image))
                if len(pending) == batch_images:
                    flush()
            flush()
    finally:
        writer.close()
    result.seconds = time.perf_counter() - start
    barrier(ctx)
    if ctx.is_main:
        result.rows, result.errors = merge_outputs(out)
    return result

