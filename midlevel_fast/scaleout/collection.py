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
(:func:`midlevel_fast.scaleout.inputs.decode_loader`), so a killed run leaves none behind.

Failures: a file that cannot be decoded or scored is logged (``logging`` warning ``skipped PATH: REASON``) and
recorded in the errors file, and the run goes on. ``REASON`` (the ``error`` of the errors file) says which:
``unreadable: ...`` when decoding failed, ``refused: ...`` when scoring refused the image (too small, or too
elongated for the dense mode), with the message. Failed images are retried by the next run, so a fixed file or a
transient read error heals; a row in ``out`` means the image was scored.

Resume and sharding: every rank lists the inputs (sorted; all ranks must see the same list, which is checked),
takes its share with :func:`midlevel_fast.runtime.distributed.shard`, and skips the images that already have a row in
``out`` or in any part, whatever world size wrote it. After a barrier rank 0 merges ``out`` and all parts into
``out``. Ranks need a shared filesystem for ``out``'s directory.

Phases of :func:`score_collection`: :func:`_share` (list the inputs, check the settings, leave out what is scored:
this rank's images), :class:`_Loop` (decode, score, append a line per image), the merge (rank 0).
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from midlevel_fast.model.classifier import PatchClassifier, default_model
from midlevel_fast.runtime.distributed import DistContext, all_gather_objects, barrier, current, shard
from midlevel_fast.runtime.precision import Precision
from midlevel_fast.runtime.progress import progress_bar
from midlevel_fast.scaleout.inputs import decode_loader, list_images
from midlevel_fast.scaleout.results import (PartWriter, check_meta, merge_outputs, output_format, output_paths,
                                            pyarrow_modules, scored_paths)
from midlevel_fast.scaleout.rows import collection_row
from midlevel_fast.scoring.images import GPU_BATCH_IMAGES, score_images
from midlevel_fast.scoring.options import DEFAULTS, Mode, ScoreOptions
from midlevel_fast.scoring.result import ScoreResult
from midlevel_fast.scoring.score import score_image
from midlevel_fast.viz.overlay import map_stems

log = logging.getLogger(__name__)


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
    maps = Path(maps_dir) if maps_dir is not None else None
    todo, stems, result = _share(inputs, out, maps, {**settings, "class_names": list(model.class_names)}, ctx)
    if batch_images is None:
        batch_images = GPU_BATCH_IMAGES if mode == "dense" and torch.device(ctx.device).type == "cuda" else 1

    def row(key: str, res: ScoreResult, image: np.ndarray) -> dict[str, Any]:
        return collection_row(key, res, settings, top, full_scores, maps, image, stems.get(key))

    desc = f"scoring (rank {ctx.rank}/{ctx.world_size})" if ctx.distributed else "scoring"
    start = time.perf_counter()
    with (PartWriter(output_paths(out)[0] / f"rank{ctx.rank:05d}.jsonl") as writer,
          progress_bar(log, progress, total=len(todo), unit="img", desc=desc, smoothing=0.1) as bar,
          logging_redirect_tqdm()):
        _Loop(model, options, batch_images, writer, row, result, bar.update).run(decode_loader(todo, num_workers))
    result.seconds = time.perf_counter() - start
    barrier(ctx)
    if ctx.is_main:
        result.rows, result.errors = merge_outputs(out)
    return result


def _share(inputs: str | os.PathLike | Sequence[str | os.PathLike], out: Path, maps: Path | None,
           meta: dict[str, Any], ctx: DistContext) -> tuple[list[tuple[str, Path]], dict[str, str], CollectionResult]:
    """What this rank scores: ``(todo, stems, result)``, the ``(key, path)`` of its share of the inputs
    (:func:`midlevel_fast.runtime.distributed.shard` of the sorted list, which must be the same on every rank) that
    have no row yet in ``out`` or a part, the map stems of all keys with ``maps`` (else none), and its
    :class:`CollectionResult` with ``resumed`` counted. Refuses an ``out`` scored with other settings than ``meta``
    and records ``meta`` on rank 0 (:func:`midlevel_fast.scaleout.results.check_meta`)."""
    parts, _, _ = output_paths(out)
    items = list_images(inputs, exclude=[parts] + ([maps] if maps else []))
    digest = hashlib.sha1("\n".join(key for key, _ in items).encode()).hexdigest()
    if len(set(all_gather_objects(digest))) > 1:
        raise RuntimeError(f"the ranks see different lists of images in {inputs!r}; they need the same files "
                           "(a shared filesystem, or identical copies)")
    out.parent.mkdir(parents=True, exist_ok=True)
    check_meta(out, meta, writer=ctx.is_main)
    done = scored_paths(out)
    # Map names from the whole list, the same on every rank: images differing only by suffix get apart.
    stems = map_stems([key for key, _ in items]) if maps else {}
    mine = shard(items, ctx.rank, ctx.world_size)
    todo = [(key, path) for key, path in mine if key not in done]
    result = CollectionResult(out, scored=0, resumed=len(mine) - len(todo), failed=0, seconds=0.0)
    if result.resumed:
        log.info("rank %d: %d of its %d images already scored", ctx.rank, result.resumed, len(mine))
    return todo, stems, result


@dataclass
class _Loop:
    """The scoring loop of one rank: one line per decoded image, a row (``row(key, score_result, image)``) or an error
    ``{"path", "error"}``, appended by ``writer`` to the rank's part, counted in ``result``; ``done()`` after each
    (the progress bar). Images go to the model ``batch_images`` at a time (module docstring)."""

    model: PatchClassifier
    options: ScoreOptions
    batch_images: int
    writer: PartWriter
    row: Callable[[str, ScoreResult, np.ndarray], dict[str, Any]]
    result: CollectionResult
    done: Callable[[], object]

    def run(self, loader: Iterable[tuple[str, Any, str | None]]) -> None:
        """Scores every image of ``loader`` (:func:`midlevel_fast.scaleout.inputs.decode_loader`)."""
        pending: list[tuple[str, np.ndarray]] = []
        for key, image, error in loader:
            if error is not None:
                self._skip(key, f"unreadable: {error}")
                continue
            pending.append((key, image))
            if len(pending) == self.batch_images:
                self._flush(pending)
                pending = []
        self._flush(pending)

    def _flush(self, chunk: list[tuple[str, np.ndarray]]) -> None:
        for (key, image), outcome in zip(chunk, self._score_chunk(chunk)):
            if isinstance(outcome, str):
                self._skip(key, outcome)
                continue
            self.writer.write(self.row(key, outcome, image))
            self.result.scored += 1
            self.done()

    def _score_chunk(self, chunk: list[tuple[str, np.ndarray]]) -> Sequence[ScoreResult | str]:
        """The results of ``chunk``, or for a refused image the reason, ``refused: ...``."""
        o = self.options
        if len(chunk) > 1:
            try:
                return score_images([image for _, image in chunk], self.model, batch_images=len(chunk), workers=0,
                                    mode=o.mode, k=o.k, return_maps=o.return_maps, device=o.device,
                                    window_step=o.window_step, precision=o.precision,
                                    detection_threshold=o.detection_threshold)
            except ValueError:
                # One of them is refused. score_images checks every image of a chunk before its trunk runs, so
                # nothing was computed yet: find which, image by image.
                pass
        return [self._score_one(image) for _, image in chunk]

    def _score_one(self, image: np.ndarray) -> ScoreResult | str:
        try:
            return score_image(image, self.model, **self.options.as_kwargs())
        except ValueError as e:  # too small, too elongated for the mode: the image, not the run
            return f"refused: {e}"

    def _skip(self, key: str, reason: str) -> None:
        log.warning("skipped %s: %s", key, reason)
        self.writer.write({"path": key, "error": reason})
        self.result.failed += 1
        self.done()
