"""The regions of a map's level sets at every threshold, from union-find passes in compiled code.

Thresholding an image at cut ``c`` keeps the pixels whose level exceeds ``c``. As ``c`` falls,
regions appear at local maxima, grow and merge: a merge (component) tree. The compiled core
(``_tree.c``) builds it with a union-find over the pixels taken by descending level (a counting
sort, as levels are small integers), union by weight (pixels, or contour area where that is what
ranks regions) and path halving, and reads every live region's box, weight and first pixel in
raster order off it at each cut as it passes. Which
neighbours of a pixel are already in is a function of the levels alone, so it is computed for all
pixels beforehand in one vectorised scan. The cost is one pass over the pixels plus one output row
per region and cut, so 1000 thresholds cost little more than 100. Given ground-truth boxes, the
core also scores every row's box (its best IoU with them): in numpy that was most of the
evaluator's work after the pass, itself a fifth of its time per image.

- :func:`float_regions`: a pixel's level is the number of thresholds at or below its score, and the
  regions are the 8-connected components.
- :func:`benchmark_contours`: the contours OpenCV finds in the uint8 map. The *filled* map, each
  pixel's lowest cut at which it is outside (joined to the image frame through background pixels),
  is the map with the holes of all its level sets filled: a grayscale reconstruction from the frame
  (two raster scans and a queue). A pixel is in a hole at cut ``c`` exactly when
  ``map <= c < filled``, so a union-find over the pixels of depressions alone gives the holes. The
  largest contour is that of an outermost region (the pixel above its first pixel is outside; see
  :func:`~spgkit.localization.regions.benchmark_regions`), and its area is that of the region with
  its holes filled: its own cells' area plus at most the cut's excess, the filled map's cell area
  less the outermost regions' own. Where the best region's own area beats every other's by more than
  that, the holes cannot change the answer; at the rare cuts where they could, a union-find pass
  over the filled map, whose regions are the outermost regions with their holes filled, decides.

The core is optional: where it was not built (an install without a C compiler) or ``SPGKIT_PURE=1``
turns it off, both functions come from :mod:`~spgkit.localization.readable`, threshold by threshold
with OpenCV, with the same results (rows in another order).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from spgkit.localization import readable


def _load_core():
    """The compiled core, or None (with a one-line warning, once per process, as this module is
    imported once) where it was not built or ``SPGKIT_PURE=1`` turns it off, so that tests and CI
    can run the readable path."""
    if os.environ.get("SPGKIT_PURE", "0") not in ("", "0"):
        why = "turned off (SPGKIT_PURE)"
    else:
        try:
            from spgkit.localization import _tree

            return _tree
        except ImportError:
            why = "not built (no C compiler at install?)"
    warnings.warn(
        f"spgkit's compiled localization core is {why}: the readable OpenCV path gives the same results, "
        "slower per image by about 6x (benchmark protocol) and 85x (float) at 100 thresholds, 14x and 500x "
        "at 1000 (docs/results.rst)",
        RuntimeWarning,
        stacklevel=2,
    )
    return None


_core = _load_core()


@contextmanager
def without_core() -> Iterator[None]:
    """The readable path inside the block, even where the core is built: for the tests and the
    benchmark that compare the two."""
    global _core
    kept, _core = _core, None
    try:
        yield
    finally:
        _core = kept


def _unpack(rows: bytearray, largest: bytearray, iou: bytearray | None) -> tuple:
    # (box_cut, boxes, largest, iou) from the core's int64 rows (cut index, x0, y0, x1, y1).
    table = np.frombuffer(rows, dtype=np.int64).reshape(-1, 5)
    return table[:, 0], table[:, 1:], np.frombuffer(largest, dtype=np.int64), None if iou is None else np.frombuffer(iou)


def _checked_gt(gt_boxes: np.ndarray | None) -> np.ndarray | None:
    # float64 (m, 4) boxes, m >= 1: a best IoU over no box is undefined, as box_iou's max would say.
    if gt_boxes is None:
        return None
    gt = np.ascontiguousarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if len(gt) == 0:
        raise ValueError("ground-truth boxes must be float64 bytes, four per box, at least one box")
    return gt


def float_regions(normalized: np.ndarray, thresholds: np.ndarray, gt_boxes: np.ndarray | None = None) -> tuple:
    """The 8-connected regions of ``normalized >= t`` (a float32/float64 map in [0, 1]) at each
    ascending threshold ``t``, with tight inclusive boxes.

    Returns ``(box_cut, boxes, largest, iou)``: box ``k`` belongs to threshold ``box_cut[k]``; the
    region with the most pixels at threshold ``j`` (ties: the one whose first pixel in raster order
    comes first) is box ``largest[j]``, or -1 where no pixel reaches it. With ``gt_boxes`` (m, 4),
    ``iou[k]`` is box ``k``'s best IoU with them, as
    :func:`~spgkit.boxes.box_iou` computes it; otherwise ``iou`` is None."""
    scores = np.ascontiguousarray(normalized)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    thresholds, gt = np.ascontiguousarray(thresholds, dtype=np.float64), _checked_gt(gt_boxes)
    if _core is None:
        return readable.float_regions(scores, thresholds, gt)
    height, width = scores.shape
    return _unpack(*_core.float_regions(scores, scores.itemsize, height, width, thresholds, *_optional(gt)))


def benchmark_contours(U: np.ndarray, cuts: np.ndarray, gt_boxes: np.ndarray | None = None) -> tuple:
    """OpenCV's contours of ``U > cut`` (``U`` uint8) at each ascending integer cut, with the WSOL
    benchmark's boxes, as :func:`~spgkit.localization.regions.benchmark_regions` defines them.

    Returns ``(box_cut, boxes, largest, iou)`` as :func:`float_regions` does; where no contour
    exists the cut has the single box ``[0, 0, 0, 0]``, which is then its largest."""
    image = np.ascontiguousarray(U, dtype=np.uint8)
    cuts, gt = np.ascontiguousarray(cuts, dtype=np.int64), _checked_gt(gt_boxes)
    if _core is None:
        return readable.benchmark_contours(image, cuts, gt)
    height, width = image.shape
    return _unpack(*_core.benchmark_regions(image, height, width, cuts, *_optional(gt)))


def _optional(gt: np.ndarray | None) -> tuple:
    # The core's optional last argument.
    return () if gt is None else (gt,)
