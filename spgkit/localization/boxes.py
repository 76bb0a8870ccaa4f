"""Box overlap in the evaluator's convention: inclusive pixel corners ``x0, y0, x1, y1``, as the
WSOL benchmark computes it. Below every other localization module, so the compiled core's wrapper,
the readable path and the evaluator all score boxes with this one function."""

from __future__ import annotations

import numpy as np


def box_iou(boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """IoU of every box with every ground-truth box, (n, m) float64, for inclusive pixel boxes
    ``x0, y0, x1, y1`` (area = (x1 - x0 + 1) * (y1 - y0 + 1), the WSOL benchmark's convention).

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
