"""Boxes in spgkit: one convention, converted and checked at the edges. Imports numpy only, so
the readers, the evaluator, figures, the command line and plugins all stand on it.

**The convention.** Boxes are a float numpy array of shape (n, 4), one row ``x0, y0, x1, y1`` per
box, half-open in the pixel coordinates of the image they belong to: a box covers the pixels
``x0 <= x < x1`` and ``y0 <= y < y1``, so its width is ``x1 - x0``. A box around pixel columns
3..5 has ``x0 = 3, x1 = 6``. A box has at least one pixel (``x0 < x1``, ``y0 < y1``) and lies
inside its image (``0 <= x0``, ``x1 <= width``, the same for ``y``). **No box** is the empty
(0, 4) array :data:`NO_BOXES`, never None, -1s or zeros. Samples carry the same numbers as
torchvision ``BoundingBoxes`` (format XYXY, float32). :func:`check_boxes` says whether an array
follows the convention.

**The edges**, where other conventions meet this one, each converted in one place:

- *readers*: files that name the last pixel inside a box (Tiny ImageNet, ILSVRC XML, the WSOL
  benchmark's ``localization.txt``) through :func:`from_inclusive`, CUB's ``x y w h`` through
  :func:`from_xywh`, masks through :func:`mask_box`; every record is checked again against its
  decoded image (:meth:`spgkit.data.base.RecordDataset.__getitem__`).
- *the evaluator* scores boxes as the WSOL benchmark does, with inclusive corners
  ``(x0, y0, x1 - 1, y1 - 1)`` and area ``(x1 - x0 + 1) * (y1 - y0 + 1)`` (:func:`box_iou`).
  The protocol's :meth:`~spgkit.localization.Protocol.resize_gt_boxes` is the one conversion
  into it; the regions' boxes (:class:`~spgkit.localization.ThresholdBoxes`) and the
  evaluator's per-image table stay in it, and leave through :func:`from_inclusive` and
  :func:`table_boxes` (:func:`~spgkit.localization.largest_region_box` gives spgkit's boxes).
- *figures* draw a box as the rectangle from ``(x0 - 0.5, y0 - 0.5)``, ``x1 - x0`` wide: pixel
  centres sit at integer coordinates in ``imshow``.
- *the command line* (``spgkit localize``) gives boxes in the original image's pixels:
  :func:`rescale`.
- *CutMix* pastes the region of one box (``spgkit_cutmix.cut_box``): rows ``y0:y1``, columns
  ``x0:x1``.
"""

from __future__ import annotations

import numpy as np

NO_BOXES = np.zeros((0, 4), dtype=np.float32)
"""No box: the (0, 4) array of an image without one (not None, -1s or zeros). Do not write into it."""

MISSING = -1
"""What fills the row of an image with no box in a fixed-shape (N, 4) table of one box per image
(the evaluator's per-image ``cam_box``); :func:`table_boxes` reads such a table back."""


class BoxError(ValueError):
    """An array does not follow the box convention; the message, one line, names the box at fault."""


def box_problem(box, size: tuple[int, int] | None) -> str | None:
    """Why one box ``x0, y0, x1, y1`` (the convention above) is not a box of an image of ``size =
    (H, W)``, or None when it is. With ``size`` None (not known before the image is decoded) only
    what needs no size is checked: the box has a pixel and starts at non-negative coordinates."""
    x0, y0, x1, y1 = (float(v) for v in box)
    shown = f"({x0:g}, {y0:g}, {x1:g}, {y1:g})"
    if not np.isfinite((x0, y0, x1, y1)).all():
        return f"box {shown} has a NaN or infinite coordinate"
    if not (x0 < x1 and y0 < y1):
        return f"box {shown} is empty (needs x0 < x1 and y0 < y1)"
    if size is None:
        return f"box {shown} starts at a negative coordinate, outside any image" if x0 < 0 or y0 < 0 else None
    height, width = size
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        return f"box {shown} lies outside the {width}x{height} image"
    return None


def check_boxes(boxes, size: tuple[int, int] | None = None) -> np.ndarray:
    """``boxes`` unchanged where they follow the convention: a float numpy array of shape (n, 4)
    (n may be 0) whose every row is a box of an image of ``size = (H, W)`` (:func:`box_problem`).
    Otherwise :class:`BoxError`, naming the first box at fault and its index."""
    if not isinstance(boxes, np.ndarray) or not np.issubdtype(boxes.dtype, np.floating):
        what = f"an array of {boxes.dtype}" if isinstance(boxes, np.ndarray) else type(boxes).__name__
        raise BoxError(f"boxes must be a float numpy array, not {what}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise BoxError(f"boxes must have shape (n, 4), not {boxes.shape}")
    for index, box in enumerate(boxes):
        problem = box_problem(box, size)
        if problem is not None:
            raise BoxError(f"boxes[{index}]: {problem}")
    return boxes


def from_inclusive(boxes, size: tuple[int, int] | None = None) -> np.ndarray:
    """(n, 4) boxes whose ``x1, y1`` name the last pixel inside them, in spgkit's convention
    (float64): ``x1 + 1``, ``y1 + 1``.

    With ``size = (H, W)``, one tolerance that real files need: an ``x1`` equal to the width (or
    ``y1`` to the height) is read as "up to the border" and stays there. The benchmark's CUB boxes
    are ``x, y, x + w, y + h`` of ``bounding_boxes.txt``, which reach the width exactly when a bird
    touches the right edge. Anything further out fails :func:`check_boxes`."""
    out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    height, width = size if size is not None else (np.inf, np.inf)
    out[:, 2] += out[:, 2] != width
    out[:, 3] += out[:, 3] != height
    return out


def from_xywh(boxes) -> np.ndarray:
    """(n, 4) boxes ``x, y, w, h`` (CUB's ``bounding_boxes.txt``: ``w`` columns from ``x``) in
    spgkit's convention (float64): ``x, y, x + w, y + h``."""
    out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    out[:, 2:] += out[:, :2]
    return out


def mask_box(mask: np.ndarray) -> np.ndarray:
    """The box around the nonzero pixels of an (H, W) ``mask`` (float32, (1, 4)), or
    :data:`NO_BOXES` where there are none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return NO_BOXES
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]], dtype=np.float32)


def table_boxes(table) -> list[np.ndarray]:
    """A fixed-shape (N, 4) table of one inclusive box per image (the evaluator's per-image
    ``cam_box``) as N arrays in spgkit's convention: (1, 4), or :data:`NO_BOXES` for a row of
    :data:`MISSING`."""
    return [NO_BOXES if row[0] == MISSING else from_inclusive(row) for row in np.asarray(table)]


def rescale(boxes: np.ndarray, size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """(n, 4) boxes of an image of ``size = (H, W)`` on the same image resized to ``new_size``:
    ``x`` times ``new_W / W``, ``y`` times ``new_H / H`` (float64)."""
    (height, width), (new_height, new_width) = size, new_size
    sx, sy = new_width / width, new_height / height
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * np.array([sx, sy, sx, sy])


def box_iou(boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """IoU of every box with every ground-truth box, (n, m) float64, for the evaluator's inclusive
    pixel boxes ``x0, y0, x1, y1`` (area = (x1 - x0 + 1) * (y1 - y0 + 1), the WSOL benchmark's
    convention). Below every localization module, so the compiled core's wrapper, the readable
    path and the evaluator all score boxes with this one function.

    A pair whose union is not positive (degenerate boxes) has IoU 0, as in the benchmark."""
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 1, 4)
    b = np.asarray(gt_boxes, dtype=np.float64).reshape(1, -1, 4)
    inter_w = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    inter_h = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = inter_w * inter_h
    union = (
        (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
        + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
        - inter
    )
    positive = union > 0
    return np.where(positive, inter / np.where(positive, union, 1), 0.0)
