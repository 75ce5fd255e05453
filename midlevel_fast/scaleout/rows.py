"""The row of one scored image in a collection's table (:func:`midlevel_fast.scaleout.collection.score_collection`).

Row: ``{"path", "mode", "k", "backbone", "detection_threshold", **ScoreResult.to_dict(top)}``: the settings of the
meta file, then the record of :meth:`midlevel_fast.scoring.result.ScoreResult.to_dict` (``width``, ``height``,
``patches``, ``classes``: the ``top`` best classes with their ``score``, ``presence`` and ``point``, ``detections``,
``seconds``: the record ``midlevel-fast score --json`` prints). Plus
``"scores": [float, ...]`` (every class, in the order of ``class_names`` in the meta file: names cannot be keys
there) with ``full_scores``, and ``"maps": [file, ...]`` (relative to ``maps_dir``) with ``maps_dir``: the maps of
the present classes among ``top`` (presence >= 0.5), of the best class without calibration
(:func:`midlevel_fast.viz.overlay.chosen_maps`), named ``<stem>_<rank>_<class>.png`` with the stem of ``path``
(:func:`midlevel_fast.viz.overlay.map_stem`: ``a/b/img.jpg`` -> ``a__b__img``; images whose paths differ only by
suffix, ``a.jpg`` and ``a.png``, keep their suffix in it: :func:`midlevel_fast.viz.overlay.map_stems` of the whole
list).

Rows of outputs written before ``classes`` (``top`` ``[{"class", "score"}]``, with ``presence`` and ``points``
beside it) still resume: the merge brings them to this schema (:func:`current_row`), so that one table has one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from midlevel_fast.scoring.result import ScoreResult
from midlevel_fast.viz.overlay import chosen_maps, map_stem, write_maps


def collection_row(key: str, res: ScoreResult, settings: dict[str, Any], top: int, full_scores: bool,
                   maps: Path | None, image: np.ndarray, stem: str | None = None) -> dict[str, Any]:
    """The row of the image ``key``, writing its map overlays first (a row implies its maps exist); the map files
    are named after ``stem`` (default ``map_stem(key)``; :func:`midlevel_fast.viz.overlay.map_stems` of all keys
    keeps images that differ only by suffix apart). ``settings``: the meta file's ``mode``, ``k``, ``backbone``,
    ``detection_threshold`` (those of ``res`` equal them)."""
    row: dict[str, Any] = {"path": key, **settings, **res.to_dict(top)}
    if full_scores:
        row["scores"] = res.scores.tolist()
    if maps is not None:
        row["maps"] = write_maps(image, res, maps, map_stem(key) if stem is None else stem, chosen_maps(res))
    return row


def current_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` in the schema of :func:`collection_row`. A row with ``top`` instead of ``classes`` gets ``classes``
    from its ``top``, ``presence`` (in the order of ``top``; ``null`` or absent without calibration) and ``points``
    (``{class: [x, y]}``); any other row (an error too) is returned as it is."""
    if "top" not in row or "classes" in row:
        return row
    presence = row.get("presence")
    points = row.get("points") or {}
    classes = [{"class": t["class"], "score": t["score"], "presence": None if presence is None else presence[i],
                "point": points.get(t["class"])} for i, t in enumerate(row["top"])]
    return {("classes" if k == "top" else k): (classes if k == "top" else v) for k, v in row.items()
            if k not in ("presence", "points")}
