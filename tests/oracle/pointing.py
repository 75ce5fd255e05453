"""Oracles of :mod:`midlevel_fast.metrics.pointing` and :mod:`midlevel_fast.scoring.points`: TorchRay's pointing
game written out pixel by pixel (the class mask painted box by box, the acceptance disc around the point tested at
every pixel), then the per-class counts; a map's point by flood fill; window sums box by box. Shares no code with
the package."""
from __future__ import annotations

from typing import Mapping, Sequence


def box_mask(boxes: Sequence[Sequence[float]], height: int, width: int) -> list[list[bool]]:
    """``mask[i][j]``: pixel ``(i, j)``'s centre ``(j + 0.5, i + 0.5)`` lies in one of ``boxes`` ``[x0, x1) ×
    [y0, y1)``."""
    mask = [[False] * width for _ in range(height)]
    for x0, y0, x1, y1 in boxes:
        for i in range(height):
            for j in range(width):
                if x0 <= j + 0.5 < x1 and y0 <= i + 0.5 < y1:
                    mask[i][j] = True
    return mask


def is_hit_reference(point: Sequence[float], boxes: Sequence[Sequence[float]], height: int, width: int,
                     tolerance: float = 15) -> bool:
    """A hit when a pixel is both in the mask and in the acceptance region ``(centre - point)² < tolerance²``,
    i.e. when the point lies in the mask dilated by an open disc of radius ``tolerance``."""
    x, y = point
    mask = box_mask(boxes, height, width)
    return any(mask[i][j] and (j + 0.5 - x) ** 2 + (i + 0.5 - y) ** 2 < tolerance ** 2
               for i in range(height) for j in range(width))


def pointing_game_reference(images: Sequence[tuple[int, int, Sequence[tuple[str, Sequence[float], bool]]]],
                            points: Sequence[Mapping[str, Sequence[float]]], classes: Sequence[str],
                            tolerance: float = 15) -> tuple[list[int], list[int], float]:
    """``images[i] = (height, width, [(class, box, difficult), ...])``. Returns hits and misses per class and the
    mean over classes of ``hits / max(hits + misses, 1)``. A class is played in an image when one of its objects
    there is not difficult; its mask holds all its boxes, difficult ones too (TorchRay's ``voc_as_mask``)."""
    hits = [0] * len(classes)
    misses = [0] * len(classes)
    for (height, width, objects), pts in zip(images, points):
        for c, name in enumerate(classes):
            mine = [(box, difficult) for cls, box, difficult in objects if cls == name]
            if not mine or all(difficult for _, difficult in mine):
                continue
            if is_hit_reference(pts[name], [box for box, _ in mine], height, width, tolerance):
                hits[c] += 1
            else:
                misses[c] += 1
    accuracy = sum(h / max(h + m, 1) for h, m in zip(hits, misses)) / len(classes)
    return hits, misses, accuracy


def map_point_reference(heat: Sequence[Sequence[float]]) -> tuple[float, float]:
    """The point of one map (``heat[i][j]``, row ``i``, column ``j``): the centroid of the pixel centres of the
    largest 4-connected region of pixels equal to the maximum, found by flood fill from every maximal pixel in
    row-major order (the first region found wins a tie)."""
    height, width = len(heat), len(heat[0])
    top = max(max(row) for row in heat)
    seen = [[False] * width for _ in range(height)]
    best: list[tuple[int, int]] = []
    for i in range(height):
        for j in range(width):
            if heat[i][j] != top or seen[i][j]:
                continue
            region, stack = [], [(i, j)]
            seen[i][j] = True
            while stack:
                a, b = stack.pop()
                region.append((a, b))
                for na, nb in ((a - 1, b), (a + 1, b), (a, b - 1), (a, b + 1)):
                    if 0 <= na < height and 0 <= nb < width and not seen[na][nb] and heat[na][nb] == top:
                        seen[na][nb] = True
                        stack.append((na, nb))
            if len(region) > len(best):
                best = region
    return sum(b + 0.5 for _, b in best) / len(best), sum(a + 0.5 for a, _ in best) / len(best)


def window_sum_maps_reference(boxes: Sequence[Sequence[float]], probs: Sequence[Sequence[float]], height: int,
                              width: int) -> list[list[list[float]]]:
    """``maps[c][i][j]``: the sum of ``probs[m][c]`` over the boxes ``m`` whose ``[x0, x1) × [y0, y1)`` holds the
    centre of pixel ``(i, j)``, box by box and pixel by pixel."""
    classes = len(probs[0]) if probs else 0
    maps = [[[0.0] * width for _ in range(height)] for _ in range(classes)]
    for (x0, y0, x1, y1), p in zip(boxes, probs):
        for i in range(height):
            for j in range(width):
                if x0 <= j + 0.5 < x1 and y0 <= i + 0.5 < y1:
                    for c in range(classes):
                        maps[c][i][j] += p[c]
    return maps
