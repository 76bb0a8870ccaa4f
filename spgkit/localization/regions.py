"""The regions of a localization map at every threshold, in two sets of definitions.

Default (:func:`default_regions`): the foreground of threshold ``tau`` is ``map >= tau`` on the float
map; regions are its 8-connected components with tight inclusive boxes; the largest has the most
pixels. Benchmark (:func:`benchmark_regions`): the WSOL benchmark's OpenCV definitions, bit for bit.
Both come from compiled union-find passes over the map (:mod:`~spgkit.localization.tree`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from spgkit.localization.maps import as_numpy
from spgkit.localization.tree import benchmark_contours, float_regions


class Regions(NamedTuple):
    """Regions of one map at ascending integer ``cuts`` (the foreground of cut ``c`` is ``level > c``).

    ``boxes[k]`` (inclusive ``x0, y0, x1, y1``) belongs to cut ``cuts[box_cut[k]]``; the largest
    region at cut ``s`` is ``boxes[largest[s]]``, or none where ``largest[s]`` is -1. Where
    ground-truth boxes were given, ``iou[k]`` is box ``k``'s best IoU with them (as
    :func:`~spgkit.boxes.box_iou` computes it, in the same pass); else None.
    """

    cuts: np.ndarray
    box_cut: np.ndarray
    boxes: np.ndarray
    largest: np.ndarray
    iou: np.ndarray | None = None


def default_regions(normalized: np.ndarray, thresholds: np.ndarray, gt_boxes: np.ndarray | None = None) -> Regions:
    """Regions of the default mode at ascending ``thresholds`` (cut ``j`` is threshold ``j``): the
    8-connected components of ``normalized >= thresholds[j]``, tight inclusive boxes, and the
    largest region by pixel count (ties: the one whose first pixel in row-major order comes first);
    with ``gt_boxes``, each box's best IoU with them."""
    return Regions(np.arange(len(thresholds)), *float_regions(normalized, thresholds, gt_boxes))


def benchmark_regions(U: np.ndarray, cuts: np.ndarray, gt_boxes: np.ndarray | None = None) -> Regions:
    """Regions exactly as OpenCV reports them in the WSOL benchmark, for the uint8 map ``U``.

    At cut ``c`` the binary image is ``U > c``. ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``
    returns one outer contour per 8-connected component and one inner contour per hole (a
    4-connected background component that does not touch the border); ``cv2.boundingRect`` gives
    ``(x, y, w, h)`` and the benchmark's box is ``(x, y, min(x + w, W - 1), min(y + h, H - 1))``.
    An outer contour spans its component's pixels; an inner contour runs through the foreground
    pixels around its hole, one pixel outside the hole on every side. With no contour at all the
    benchmark uses the box ``[0, 0, 0, 0]``.

    The largest contour is the first of maximal ``cv2.contourArea`` in OpenCV's order. That area is
    the area of the polygon through the contour's pixel centres: for an outer contour, the area of
    the cells (2x2 pixel squares) of its component with its holes filled, a cell with 4 corners in
    it counting 1 and one with 3 counting 1/2. OpenCV lists contours depth first, later-found
    siblings first (a raster scan finds a contour at its first pixel), and a contour encloses at
    least the area of every contour inside it: so the largest is an outermost component's outer
    contour, ties going to the component whose first pixel comes last. These rules were checked
    against OpenCV on random images (tests/localization). With ``gt_boxes``, each box's best IoU
    with them comes too.
    """
    return Regions(cuts, *benchmark_contours(U, cuts, gt_boxes))


# --------------------------------------------------------------------------- public helpers


class ThresholdBoxes(NamedTuple):
    """Boxes of one map at every threshold (inclusive pixel corners ``x0, y0, x1, y1``).

    ``largest[j]`` is the box of the largest region at ``thresholds[j]`` (valid where
    ``has_largest[j]``); ``boxes[offsets[j]:offsets[j + 1]]`` are the boxes of all its regions,
    sorted. In benchmark mode there is always a box: ``[0, 0, 0, 0]`` when no contour exists.
    """

    thresholds: np.ndarray
    largest: np.ndarray
    has_largest: np.ndarray
    boxes: np.ndarray
    offsets: np.ndarray

    def boxes_at(self, j: int) -> np.ndarray:
        """All region boxes at ``thresholds[j]``, shape (n, 4)."""
        return self.boxes[self.offsets[j] : self.offsets[j + 1]]


def threshold_grid(count: int) -> np.ndarray:
    """``count`` thresholds in [0, 1) as the WSOL benchmark lists them: ``np.arange(0, 1, 1 / count)``
    (its ``cam_curve_interval``: 0.01 to report, 0.001 in training). ``k / count`` would differ in
    the last bit for some ``k``, and so would the integer cut ``int(tau * 255)`` of a few."""
    if count < 1:
        raise ValueError(f"the number of thresholds must be at least 1, not {count}")
    return np.arange(0, 1, 1 / count)


def check_thresholds(thresholds) -> np.ndarray:
    """Validate thresholds: a non-empty ascending 1-D sequence in [0, 1]; None gives the WSOL
    benchmark's reporting default ``np.arange(0, 1, 0.01)``."""
    if thresholds is None:
        return threshold_grid(100)
    out = np.asarray(as_numpy(thresholds), dtype=np.float64)
    if out.ndim != 1 or len(out) == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {out.shape}")
    if not np.all(np.isfinite(out)) or out.min() < 0 or out.max() > 1:
        raise ValueError("thresholds must lie in [0, 1]")
    if np.any(np.diff(out) <= 0):
        raise ValueError("thresholds must be strictly increasing")
    return out

