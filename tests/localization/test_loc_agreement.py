"""Benchmark mode against the per-threshold OpenCV reference, and the default mode against a direct
per-threshold labelling, on hundreds of random maps (smooth and blocky)."""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
from spgkit.localization import readable as ref  # noqa: E402
from spgkit.localization import LocalizationEvaluator, box_iou, threshold_boxes  # noqa: E402

STEPS = np.arange(0, 1, 0.01)
FINE = np.arange(0, 1, 0.001)  # hits every uint8 cut


def _sorted(boxes) -> list[tuple[int, ...]]:
    return sorted(tuple(int(v) for v in box) for box in boxes)


def _assert_same_boxes(score_map: np.ndarray, thresholds: np.ndarray) -> None:
    ours = threshold_boxes(score_map, thresholds, protocol="benchmark")
    expected = ref.contours_at_thresholds(ref.normalize_scoremap(score_map), thresholds)
    for j, (largest, boxes) in enumerate(expected):
        assert tuple(ours.largest[j]) == tuple(largest), f"largest box at threshold {thresholds[j]}"
        assert _sorted(ours.boxes_at(j)) == _sorted(boxes), f"all boxes at threshold {thresholds[j]}"


def test_every_threshold_matches_opencv(maps_and_boxes):
    """500 maps at 100 thresholds: each threshold's largest-contour box and its set of contour
    boxes (holes included) are OpenCV's."""
    samples = maps_and_boxes(seed=0, count=500)
    for score_map, _ in samples:
        _assert_same_boxes(score_map, STEPS)
    # The sample must exercise nested contours (holes, islands in holes).
    assert sum(_has_nested_contours(score_map) for score_map, _ in samples) >= 20


def _has_nested_contours(score_map: np.ndarray) -> bool:
    image = (ref.normalize_scoremap(score_map) * 255).astype(np.uint8)
    _, hierarchy = cv2.findContours((image > 127).astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0][:, 3] >= 0).any())


def _has_tied_largest(score_map: np.ndarray) -> bool:
    # Several contours of maximal area at the 0.5 cut: OpenCV's order decides the largest.
    image = (ref.normalize_scoremap(score_map) * 255).astype(np.uint8)
    contours = cv2.findContours((image > 127).astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    areas = [cv2.contourArea(c) for c in contours]
    return len(areas) > 1 and areas.count(max(areas)) > 1


def test_tiny_thin_and_tied_maps_match_opencv():
    """Odd sizes, single rows and columns, a single pixel (padding and frame cells), and small maps
    of few levels, where many contours tie for the largest area."""
    rng = np.random.default_rng(6)
    shapes = [(1, 1), (1, 2), (2, 1), (1, 9), (9, 1), (2, 2), (3, 3), (2, 7), (7, 3), (5, 6), (12, 17), (16, 9)]
    maps = [rng.integers(0, 3, shape).astype(np.float32) for shape in shapes * 8]
    for score_map in maps:
        _assert_same_boxes(score_map, STEPS)
    assert sum(_has_tied_largest(m) for m in maps) >= 10
    assert sum(_has_nested_contours(m) for m in maps) >= 5


def test_every_uint8_cut_matches_opencv(maps_and_boxes):
    """0.001 steps reach all 256 cuts of the uint8 map."""
    for score_map, _ in maps_and_boxes(seed=1, count=20):
        _assert_same_boxes(score_map, FINE)


def test_metrics_match_the_benchmark(maps_and_boxes):
    """MaxBoxAcc, MaxBoxAccV2 (each IoU level and best threshold), GT-known Loc and PxAP equal the
    benchmark's evaluators fed the same maps."""
    samples = maps_and_boxes(seed=2, count=150)
    ours = LocalizationEvaluator(thresholds=STEPS, cam_threshold=0.25, protocol="benchmark")
    v1 = ref.BoxEvaluator(STEPS, iou_thresholds=(50,), multi_contour_eval=False)
    v2 = ref.BoxEvaluator(STEPS, iou_thresholds=(30, 50, 70), multi_contour_eval=True)
    pixels = ref.MaskEvaluator(STEPS)
    known = 0
    rng = np.random.default_rng(3)
    for batch in range(0, len(samples), 10):
        for score_map, boxes in samples[batch : batch + 10]:
            normalized = ref.normalize_scoremap(score_map)
            mask = normalized > rng.uniform(0.2, 0.8)
            ignore = rng.random(mask.shape) < 0.1
            v1.accumulate(normalized, boxes)
            v2.accumulate(normalized, boxes)
            pixels.accumulate(normalized, mask, ignore)
            largest = ref.compute_bboxes_from_scoremaps(normalized, [0.25], multi_contour_eval=False)[0][0]
            known += ref.calculate_multiple_iou(largest, boxes).max() >= 0.5
            ours.update(score_map[None], [boxes], masks=mask[None], ignore=ignore[None])
    got = ours.compute()
    assert (got["maxboxacc"], got["maxboxacc_threshold"]) == v1.compute()[50]
    for delta, (accuracy, threshold) in v2.compute().items():
        assert got[f"maxboxaccv2_iou{delta}"] == accuracy
        assert got[f"maxboxaccv2_iou{delta}_threshold"] == threshold
    assert got["maxboxaccv2"] == np.mean([v2.compute()[d][0] for d in (30, 50, 70)])
    assert got["gt_known_loc"] == known * 100.0 / len(samples)
    assert got["pxap"] == pixels.compute()
    assert 5 < got["maxboxaccv2"] < 95  # the GT boxes make the metric discriminate


def _direct_regions(normalized: np.ndarray, tau: float):
    """Default definitions by labelling the thresholded map: (boxes, largest box or None)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats((normalized >= tau).astype(np.uint8), connectivity=8)
    if count == 1:
        return [], None
    boxes = [(x, y, x + w - 1, y + h - 1) for x, y, w, h, _ in stats[1:]]
    first = np.full(count, labels.size)
    np.minimum.at(first, labels.ravel(), np.arange(labels.size))  # first pixel of each label
    first = first[1:]
    sizes = stats[1:, cv2.CC_STAT_AREA]
    winner = min(np.flatnonzero(sizes == sizes.max()), key=lambda k: first[k])
    return boxes, boxes[winner]


def test_default_mode_matches_direct_labelling(maps_and_boxes):
    for score_map, _ in maps_and_boxes(seed=4, count=150):
        ours = threshold_boxes(score_map, STEPS, protocol="float")
        normalized = ref.normalize_scoremap(score_map)
        for j, tau in enumerate(STEPS):
            boxes, largest = _direct_regions(normalized, tau)
            assert _sorted(ours.boxes_at(j)) == _sorted(boxes)
            assert (tuple(ours.largest[j]) if ours.has_largest[j] else None) == largest


def test_default_metrics_match_direct_computation(maps_and_boxes):
    """MaxBoxAcc/V2 and PxAP of the default mode from per-threshold labelling and pixel counts."""
    samples = maps_and_boxes(seed=5, count=60)
    thresholds = np.arange(0, 1, 0.05)
    ours = LocalizationEvaluator(thresholds=thresholds, protocol="float")
    largest_hits = np.zeros(len(thresholds))
    best_hits = np.zeros((3, len(thresholds)))
    tp = np.zeros(len(thresholds))
    fp = np.zeros(len(thresholds))
    positives = 0
    for score_map, gt in samples:
        normalized = ref.normalize_scoremap(score_map)
        mask = normalized > 0.5
        ours.update(score_map[None], [gt], masks=mask[None])
        positives += mask.sum()
        for j, tau in enumerate(thresholds):
            boxes, largest = _direct_regions(normalized, tau)
            largest_hits[j] += largest is not None and box_iou([largest], gt).max() >= 0.5
            best = box_iou(boxes, gt).max() if boxes else 0.0
            best_hits[:, j] += [best >= 0.3, best >= 0.5, best >= 0.7]
            predicted = normalized >= tau
            tp[j] += (predicted & mask).sum()
            fp[j] += (predicted & ~mask).sum()
    got = ours.compute()
    assert got["maxboxacc"] == largest_hits.max() * 100.0 / len(samples)
    for k, delta in enumerate((30, 50, 70)):
        assert got[f"maxboxaccv2_iou{delta}"] == best_hits[k].max() * 100.0 / len(samples)
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    recall = tp / positives
    expected = sum(
        precision[j] * (recall[j] - (recall[j + 1] if j + 1 < len(recall) else 0.0)) for j in range(len(recall))
    )
    assert got["pxap"] == pytest.approx(expected * 100, abs=1e-9)
