"""The readable path of the localization evaluator: the WSOL benchmark's per-threshold OpenCV
procedure, written from its published definitions, and the regions of :mod:`~spgkit.localization.tree`
computed threshold by threshold from it.

spgkit uses :func:`float_regions` and :func:`benchmark_contours` where the compiled core is not built
(an install without a C compiler) or ``SPGKIT_PURE=1`` turns it off: the same boxes, largest regions
(tie rules included) and IoUs, one labelling or one ``cv2.findContours`` per threshold, so many times
slower (docs/results.rst gives the figures). The rest is the reference that the evaluator must match
bit for bit in benchmark mode (tests/localization and benchmarks/evaluator.py hold it to it). It
follows the benchmark (Choe et al., CVPR 2020, "wsolevaluation") step by step: normalise the float32
map, convert it to uint8 with ``(map * 255).astype(uint8)``, and for every threshold binarise it with
``cv2.threshold(..., int(tau * max), 255, THRESH_BINARY)``, find contours with
``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)`` and box them with ``cv2.boundingRect``.
"""

from __future__ import annotations

import cv2
import numpy as np

from spgkit.boxes import box_iou


def normalize_scoremap(cam: np.ndarray) -> np.ndarray:
    """Min-max normalise a map to [0, 1] in its own dtype; NaN or constant maps become zeros."""
    cam = cam.copy()
    if np.isnan(cam).any() or cam.min() == cam.max():
        return np.zeros_like(cam)
    cam -= cam.min()
    cam /= cam.max()
    return cam


def _binary_contours(scoremap_uint8: np.ndarray, threshold: float):
    return _contours_above(scoremap_uint8, int(threshold * np.max(scoremap_uint8)))


def _contours_above(scoremap_uint8: np.ndarray, cut: int):
    _, binary = cv2.threshold(scoremap_uint8, thresh=cut, maxval=255, type=cv2.THRESH_BINARY)
    return cv2.findContours(binary, mode=cv2.RETR_TREE, method=cv2.CHAIN_APPROX_SIMPLE)[0]


def _box(contour, width: int, height: int) -> list[int]:
    x, y, w, h = cv2.boundingRect(contour)
    return [x, y, min(x + w, width - 1), min(y + h, height - 1)]


def compute_bboxes_from_scoremaps(scoremap: np.ndarray, thresholds, multi_contour_eval: bool):
    """The benchmark's boxes of a normalised map: per threshold, an (n, 4) array of boxes (all
    contours, or only the one of largest ``cv2.contourArea``) and n. No contour gives [[0, 0, 0, 0]]."""
    height, width = scoremap.shape
    image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    boxes, counts = [], []
    for threshold in thresholds:
        contours = _binary_contours(image, threshold)
        if len(contours) == 0:
            boxes.append(np.asarray([[0, 0, 0, 0]]))
            counts.append(1)
            continue
        if not multi_contour_eval:
            contours = [max(contours, key=cv2.contourArea)]
        boxes.append(np.asarray([_box(c, width, height) for c in contours]))
        counts.append(len(contours))
    return boxes, counts


def contours_at_thresholds(scoremap: np.ndarray, thresholds) -> list[tuple[list[int], list[list[int]]]]:
    """One ``findContours`` per threshold giving both of the benchmark's answers: the box of the
    largest contour (first of maximal ``contourArea``) and the boxes of all contours."""
    height, width = scoremap.shape
    image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    out = []
    for threshold in thresholds:
        contours = _binary_contours(image, threshold)
        if len(contours) == 0:
            out.append(([0, 0, 0, 0], [[0, 0, 0, 0]]))
            continue
        largest = max(contours, key=cv2.contourArea)
        out.append((_box(largest, width, height), [_box(c, width, height) for c in contours]))
    return out


def calculate_multiple_iou(box_a: np.ndarray, box_b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of boxes with the +1 pixel convention; non-positive unions give 0."""
    a = np.asarray(box_a)[:, None, :]
    b = np.asarray(box_b)[None, :, :]
    inter = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1) * np.maximum(
        0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    )
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    degenerate = union <= 0
    union = np.where(degenerate, 1, union)
    ious = inter / union
    ious[degenerate] = 0
    return ious


class BoxEvaluator:
    """The benchmark's BoxEvaluator: MaxBoxAcc (``multi_contour_eval=False``, IoU 50) or
    MaxBoxAccV2 (``True``, IoU 30/50/70), accumulated image by image."""

    def __init__(self, thresholds, iou_thresholds=(30, 50, 70), multi_contour_eval: bool = True):
        self.thresholds = list(thresholds)
        self.iou_thresholds = list(iou_thresholds)
        self.multi_contour_eval = multi_contour_eval
        self.num_correct = {delta: np.zeros(len(self.thresholds)) for delta in self.iou_thresholds}
        self.count = 0

    def accumulate(self, scoremap: np.ndarray, gt_boxes) -> None:
        """Add one normalised map with its ground-truth boxes (inclusive corners)."""
        boxes, counts = compute_bboxes_from_scoremaps(scoremap, self.thresholds, self.multi_contour_eval)
        best_per_box = calculate_multiple_iou(np.concatenate(boxes, axis=0), np.asarray(gt_boxes)).max(1)
        starts = np.concatenate([[0], np.cumsum(counts)])
        best = np.asarray([best_per_box[starts[k] : starts[k + 1]].max() for k in range(len(counts))])
        for delta in self.iou_thresholds:
            self.num_correct[delta][np.where(best >= delta / 100)[0]] += 1
        self.count += 1

    def compute(self) -> dict[float, tuple[float, float]]:
        """{IoU level: (max accuracy in %, first threshold reaching it)}."""
        out = {}
        for delta in self.iou_thresholds:
            accuracy = self.num_correct[delta] * 100.0 / float(self.count)
            out[delta] = (accuracy.max(), self.thresholds[int(np.argmax(accuracy))])
        return out


class MaskEvaluator:
    """The benchmark's PxAP: score histograms of object and background pixels (ignore regions
    left out) over the bins [t_0, t_1), ..., [t_last, 1), [1, 2), [2, 3], then the area under the
    precision-recall curve by its published formula."""

    def __init__(self, thresholds):
        self.edges = np.append(np.asarray(thresholds, dtype=np.float64), [1.0, 2.0, 3.0])
        self.true_hist = np.zeros(len(self.edges) - 1)
        self.false_hist = np.zeros(len(self.edges) - 1)

    def accumulate(self, scoremap: np.ndarray, mask: np.ndarray, ignore: np.ndarray | None = None) -> None:
        """Add one normalised map with its bool object mask and optional ignore mask."""
        negative = ~mask if ignore is None else ~mask & ~ignore  # object pixels are never ignored
        self.true_hist += np.histogram(scoremap[mask], bins=self.edges)[0]
        self.false_hist += np.histogram(scoremap[negative], bins=self.edges)[0]

    def compute(self) -> float:
        num_true = self.true_hist.sum()
        tp = self.true_hist[::-1].cumsum()
        fn = num_true - tp
        fp = self.false_hist[::-1].cumsum()
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
            recall = tp / (tp + fn)
        non_zero = (tp + fp) != 0
        return float((precision[1:] * np.diff(recall))[non_zero[1:]].sum() * 100)


# --------------------------------------------------------------------------- the readable path


def float_regions(normalized: np.ndarray, thresholds: np.ndarray, gt_boxes: np.ndarray | None = None) -> tuple:
    """:func:`spgkit.localization.tree.float_regions`, one 8-connected labelling per threshold."""
    # float64 holds every float32 exactly, so that the comparison is the core's in any numpy.
    scores = np.asarray(normalized, dtype=np.float64)
    rows, largest = [], []
    for j, tau in enumerate(thresholds):
        count, labels, stats, _ = cv2.connectedComponentsWithStats((scores >= tau).astype(np.uint8), connectivity=8)
        x, y, w, h, sizes = stats[1:].T
        largest.append(len(rows) + _first_of_most(labels, sizes) if count > 1 else -1)
        rows.extend([j, *box] for box in zip(x, y, x + w - 1, y + h - 1))
    return _as_tables(rows, largest, gt_boxes)


def _first_of_most(labels: np.ndarray, sizes: np.ndarray) -> int:
    # The region (label - 1) with the most pixels; ties to the one whose first pixel in raster order
    # comes first (OpenCV's labels need not be numbered in that order).
    tied = np.flatnonzero(sizes == sizes.max())
    if len(tied) == 1:
        return int(tied[0])
    flat = labels.ravel()
    return int(min(tied, key=lambda k: int(np.argmax(flat == k + 1))))


def benchmark_contours(U: np.ndarray, cuts: np.ndarray, gt_boxes: np.ndarray | None = None) -> tuple:
    """:func:`spgkit.localization.tree.benchmark_contours`, one ``cv2.findContours`` per cut."""
    height, width = U.shape
    rows, largest = [], []
    for s, cut in enumerate(cuts):
        contours = _contours_above(U, int(cut))
        if len(contours) == 0:
            largest.append(len(rows))
            rows.append([s, 0, 0, 0, 0])
            continue
        areas = [cv2.contourArea(c) for c in contours]
        largest.append(len(rows) + areas.index(max(areas)))  # the first of maximal area, as max() picks
        rows.extend([s, *_box(c, width, height)] for c in contours)
    return _as_tables(rows, largest, gt_boxes)


def _as_tables(rows: list, largest: list, gt_boxes: np.ndarray | None) -> tuple:
    # (box_cut, boxes, largest, iou) as the compiled core gives them.

    table = np.asarray(rows, dtype=np.int64).reshape(-1, 5)
    boxes = table[:, 1:]
    iou = None if gt_boxes is None else box_iou(boxes, gt_boxes).max(axis=1)
    return table[:, 0], boxes, np.asarray(largest, dtype=np.int64), iou
