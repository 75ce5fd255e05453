"""Points: where each class is on the image, one ``(x, y)`` per class.

Convention: ``(x, y)`` in continuous pixel coordinates of the map (the image's, for :func:`score_image`'s maps):
pixel ``(row i, column j)`` covers ``[j, j+1) × [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``.

Two rules, measured by the pointing game on VOC val (``python -m experiments.pointing_game``):

* :func:`map_points`: the maximum of a map, e.g. the paper's output map (per pixel, the *mean* probability of the
  windows covering it);
* :func:`window_points`, what :attr:`midlevel_fast.scoring.result.ScoreResult.points` uses: the maximum of the
  window-*sum* map (:func:`midlevel_fast.ops.aggregate.window_sums`: per pixel, the *sum* of the probabilities of
  the windows covering it, the expected number of windows showing the class there). The mean forgets how many windows
  agree: a pixel near the border covered by three windows that all see the class outranks the middle of the object
  covered by thirty that see it at 0.9. Pointing game on VOC val, head trained on train by the shipped recipe, dense
  windows: 95.2 with the sum, 84.6 with the mean (``experiments/pointing_game.py``); the output map itself stays the
  paper's mean.


The maximum (:func:`map_points`), per map:

* the maximal value ``m`` of the map, and the set of pixels whose value equals ``m`` exactly (in the map's dtype);
* one such pixel: the point is its centre;
* several: their 4-connected regions (pixels sharing an edge); the largest region (most pixels; equal sizes:
  the region whose first pixel in row-major order comes first) gives the point, the centroid of its pixel
  centres. Plateaus are common in window maps: every pixel covered by the same set of windows has the same
  value. The centroid of a non-convex region may lie outside it; a map that is constant (e.g. all zero, where no
  window covers the image) gives the centre of the map.

Regions are found on the runs of maximal pixels of each row (a union-find over runs that share a column with a
run of the row above), so a plateau costs ``O(rows it spans)`` Python steps rather than one per pixel.
"""
from __future__ import annotations

import numpy as np
import torch

from midlevel_fast.ops.aggregate import window_sums


def map_points(maps: torch.Tensor) -> torch.Tensor:
    """The point of each map of ``maps`` (``(H, W)`` or ``(C, H, W)``, any real dtype and device) by the rule of
    the module docstring: float64 ``(2,)`` or ``(C, 2)`` on the CPU, each row ``(x, y)``. A map with a NaN, or an
    empty map, raises ``ValueError``."""
    if maps.ndim not in (2, 3):
        raise ValueError(f"maps must be (H, W) or (C, H, W), got shape {tuple(maps.shape)}")
    if maps.shape[-1] == 0 or maps.shape[-2] == 0:
        raise ValueError(f"maps must have at least one pixel, got shape {tuple(maps.shape)}")
    if maps.is_floating_point() and torch.isnan(maps).any():
        raise ValueError("maps contain NaN")
    flat = maps.detach().cpu().reshape(-1, *maps.shape[-2:]).numpy()
    points = torch.tensor([_peak(m) for m in flat], dtype=torch.float64).reshape(-1, 2)
    return points.reshape(*maps.shape[:-2], 2)


def window_points(boxes: torch.Tensor, probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(C, 2)`` float64 ``(x, y)`` per class of ``probs (M, C)``: :func:`map_points` of
    :func:`midlevel_fast.ops.aggregate.window_sums` (module docstring)."""
    return map_points(window_sums(boxes, probs, height, width)).reshape(-1, 2)


def _peak(heat: np.ndarray) -> tuple[float, float]:
    """``(x, y)`` of one ``(H, W)`` map (module docstring)."""
    top = heat == heat.max()
    if np.count_nonzero(top) == 1:
        i, j = np.unravel_index(int(np.argmax(top)), top.shape)
        return j + 0.5, i + 0.5
    return _largest_region_centroid(top)


def _largest_region_centroid(mask: np.ndarray) -> tuple[float, float]:
    """Centroid ``(x, y)`` of the pixel centres of the largest 4-connected region of ``mask`` (ties: the region
    met first in row-major order)."""
    # Runs of True per row: [start, end) columns, in row-major order (so run ids follow the raster order).
    padded = np.pad(mask, ((0, 0), (1, 1))).astype(np.int8)
    edges = np.diff(padded, axis=1)
    r_start, c_start = np.nonzero(edges == 1)
    _, c_end = np.nonzero(edges == -1)
    parent = list(range(len(r_start)))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    row_first = np.searchsorted(r_start, np.arange(mask.shape[0] + 1))
    for r in range(1, mask.shape[0]):
        a, a_end = row_first[r - 1], row_first[r]
        b, b_end = row_first[r], row_first[r + 1]
        while a < a_end and b < b_end:
            if c_start[a] < c_end[b] and c_start[b] < c_end[a]:  # the two runs share a column
                ra, rb = root(a), root(b)
                parent[max(ra, rb)] = min(ra, rb)  # the root stays the region's first run
            if c_end[a] <= c_end[b]:
                a += 1
            else:
                b += 1
    roots = np.array([root(a) for a in range(len(parent))])
    length = (c_end - c_start).astype(np.float64)
    count = np.bincount(roots, weights=length, minlength=len(parent))
    best = int(np.argmax(count))  # argmax takes the first of equal counts: the region met first
    sel = roots == best
    # Σ_{j=s}^{e-1} (j + 0.5) = (e - s)(s + e)/2 per run.
    x = np.sum(length[sel] * (c_start[sel] + c_end[sel]) / 2) / count[best]
    y = np.sum(length[sel] * (r_start[sel] + 0.5)) / count[best]
    return float(x), float(y)
