"""The compiled region pass (spgkit.localization.tree): hand-worked maps where the answer is known,
in both protocols, each also checked against OpenCV; then noisy CAM-shaped maps, whose many holes,
islands and ties are the hard case, against OpenCV and per-threshold labelling at fine steps; then
the readable path that replaces the pass where it is not built, against it."""

import os
import subprocess
import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
from spgkit.localization import readable as ref  # noqa: E402
from spgkit.localization import get_protocol, threshold_boxes, tree  # noqa: E402


def _sorted(boxes) -> list[tuple[int, ...]]:
    return sorted(tuple(int(v) for v in box) for box in boxes)


def _answers(score_map, thresholds, protocol):
    """(largest box or None, sorted boxes) at each threshold."""
    result = threshold_boxes(score_map, thresholds, protocol=protocol)
    return [
        (tuple(int(v) for v in result.largest[j]) if result.has_largest[j] else None, _sorted(result.boxes_at(j)))
        for j in range(len(thresholds))
    ]


def _opencv(score_map, thresholds):
    found = ref.contours_at_thresholds(ref.normalize_scoremap(score_map.astype(np.float32)), thresholds)
    return [(tuple(largest), _sorted(boxes)) for largest, boxes in found]


def _paint(shape, *squares, ring=()):
    """A 0/1 map with filled squares (y0, x0, side) and one-pixel-wide square outlines."""
    m = np.zeros(shape, np.float32)
    for y, x, side in ring:
        m[y : y + side, x : x + side] = 1
        m[y + 1 : y + side - 1, x + 1 : x + side - 1] = 0
    for y, x, side in squares:
        m[y : y + side, x : x + side] = 1
    return m


def test_a_hole_counts_in_its_contour_area():
    # Two 3x3 squares, the right one with a one-pixel hole: both outer contours enclose area 4, so
    # they tie and OpenCV's order gives the one found later (first pixel later in raster order).
    # Counting the holed square's own cells only (area 2) would pick the solid one.
    m = _paint((5, 9), (1, 1, 3), ring=[(1, 5, 3)])
    expected = [((5, 1, 8, 4), [(1, 1, 4, 4), (5, 1, 8, 4), (5, 1, 8, 4)])]  # solid, outer, inner
    assert _answers(m, [0.5], "benchmark") == expected == _opencv(m, [0.5])
    # The float protocol counts pixels: 9 against 8.
    assert _answers(m, [0.5], "float") == [((1, 1, 3, 3), [(1, 1, 3, 3), (5, 1, 7, 3)])]


def test_a_thin_ring_around_an_island_is_the_largest_contour():
    # A one-pixel 7x7 outline encloses a 3x3 island (area 36 with everything inside it); a 4x4
    # square beside it has area 9, the island 4. By the ring's own cells (area 2) the square would
    # win, and by enclosed area without the outermost rule the island could.
    m = _paint((9, 13), (2, 2, 3), (0, 8, 4), ring=[(0, 0, 7)])
    boxes = [(0, 0, 7, 7), (0, 0, 7, 7), (2, 2, 5, 5), (8, 0, 12, 4)]  # outer, inner (hole), island, square
    assert _answers(m, [0.5], "benchmark") == [((0, 0, 7, 7), boxes)] == _opencv(m, [0.5])
    # Pixels: ring 24, square 16, island 9.
    assert _answers(m, [0.5], "float") == [((0, 0, 6, 6), [(0, 0, 6, 6), (2, 2, 4, 4), (8, 0, 11, 3)])]


def test_a_big_island_never_beats_the_ring_around_it():
    # A 20x20 island (area 361) in a one-pixel moat inside a one-pixel 24x24 outline (its own cells
    # have area 2, its contour 529): the island's own area dwarfs the ring's, yet the ring's contour
    # encloses it and comes first.
    m = _paint((26, 26), (3, 3, 20), ring=[(1, 1, 24)])
    expected = [((1, 1, 25, 25), [(1, 1, 25, 25), (1, 1, 25, 25), (3, 3, 23, 23)])]  # outer, inner, island
    assert _answers(m, [0.5], "benchmark") == expected == _opencv(m, [0.5])


def test_islands_in_holes_in_islands():
    # Outlines 15, 11 and 7 pixels wide, nested, around a dot: 4 outer and 3 inner contours, and
    # the outermost outline encloses everything.
    m = _paint((17, 17), (8, 8, 1), ring=[(1, 1, 15), (3, 3, 11), (5, 5, 7)])
    got = _answers(m, [0.5], "benchmark")
    assert got == _opencv(m, [0.5])
    assert got[0][0] == (1, 1, 16, 16) and len(got[0][1]) == 7


def test_plateaus_saddles_and_a_single_row():
    # Levels 0 2 2 1 2 1 0 (normalised: 0 1 1 .5 1 .5 0): a plateau and a peak joined at a saddle.
    row = np.array([[0, 2, 2, 1, 2, 1, 0]], np.float32)
    thresholds = [0.25, 0.5, 0.75, 1.0]
    # Foreground >= tau: one region down to the saddle, then the plateau (2 pixels) and the peak.
    both = [(1, 0, 2, 0), (4, 0, 4, 0)]
    assert _answers(row, thresholds, "float") == [
        ((1, 0, 5, 0), [(1, 0, 5, 0)]),
        ((1, 0, 5, 0), [(1, 0, 5, 0)]),
        ((1, 0, 2, 0), both),
        ((1, 0, 2, 0), both),
    ]
    # uint8 levels 0 255 255 127 255 127 0, cuts 63, 127, 191, 255 with foreground > cut: above the
    # saddle both regions have contour area 0, and the later one comes first in OpenCV's list. At
    # cut 255 nothing is left and the benchmark's box is [0, 0, 0, 0].
    both = [(1, 0, 3, 0), (4, 0, 5, 0)]
    nothing = ((0, 0, 0, 0), [(0, 0, 0, 0)])
    expected = [((1, 0, 6, 0), [(1, 0, 6, 0)]), ((4, 0, 5, 0), both), ((4, 0, 5, 0), both), nothing]
    assert _answers(row, thresholds, "benchmark") == expected == _opencv(row, thresholds)
    # The same as a column: x and y swap.
    column = row.T.copy()
    swap = [((b[1], b[0], b[3], b[2]), sorted((c[1], c[0], c[3], c[2]) for c in boxes)) for b, boxes in expected]
    assert _answers(column, thresholds, "benchmark") == swap == _opencv(column, thresholds)


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (4, 5)])
def test_flat_maps(shape):
    # A flat map normalises to zeros: everything at tau = 0 in the float protocol, nothing above;
    # the benchmark keeps uint8 values above int(tau * 0) = 0, so never anything.
    m = np.full(shape, 3.0, np.float32)
    whole = (0, 0, shape[1] - 1, shape[0] - 1)
    assert _answers(m, [0.0, 0.5, 1.0], "float") == [(whole, [whole]), (None, []), (None, [])]
    nothing = ((0, 0, 0, 0), [(0, 0, 0, 0)])
    assert _answers(m, [0.0, 0.5, 1.0], "benchmark") == [nothing] * 3 == _opencv(m, [0.0, 0.5, 1.0])


def test_float_thresholds_compare_exactly_in_the_maps_dtype():
    # float32(0.7) is 0.69999998..., below the threshold 0.7; in float64 the two are equal.
    assert _answers(np.array([[0, 0.7, 1]], np.float32), [0.7], "float")[0][0] == (2, 0, 2, 0)
    assert _answers(np.array([[0, 0.7, 1]], np.float64), [0.7], "float")[0][0] == (1, 0, 2, 0)
    # Uneven thresholds, one equal to a value, and 1.0 (only the maximum is left).
    m = np.array([[0.0, 0.25, 0.5, 0.25, 1.0]])
    got = _answers(m, [0.0, 0.2500001, 0.5, 1.0], "float")
    assert [largest for largest, _ in got] == [(0, 0, 4, 0), (2, 0, 2, 0), (2, 0, 2, 0), (4, 0, 4, 0)]
    assert got[1][1] == [(2, 0, 2, 0), (4, 0, 4, 0)]


def test_float_ties_go_to_the_first_pixel_in_raster_order():
    # Single pixels at (x 5, y 0) and (x 0, y 1): the first comes first in raster order though its
    # box lies further right; then a 2-pixel region beats both.
    m = np.zeros((3, 7), np.float32)
    m[0, 5] = m[1, 0] = 1
    assert _answers(m, [0.5], "float")[0][0] == (5, 0, 5, 0)
    m[2, 3:5] = 1
    assert _answers(m, [0.5], "float")[0][0] == (3, 2, 4, 2)


def _cam_like(rng: np.random.Generator, grid: int, size: int, noise: float) -> np.ndarray:
    # A coarse map of blobs and uniform noise, resized by cv2 bicubic like a CAM.
    yy, xx = np.mgrid[0:grid, 0:grid]
    m = rng.uniform(0, noise, (grid, grid))
    for _ in range(rng.integers(1, 5)):
        cy, cx = rng.uniform(0, grid, 2)
        sigma = rng.uniform(0.05, 0.2) * grid
        m += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return cv2.resize(m.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)


def _noisy_maps():
    rng = np.random.default_rng(7)
    maps = [_cam_like(rng, grid, 96, noise) for grid in (14, 28) for noise in (0.1, 0.3, 1.0)]
    return maps + [rng.random((40, 40)).astype(np.float32) for _ in range(2)]  # pure noise


def _nested_contours(score_map: np.ndarray, tau: float) -> int:
    image = (ref.normalize_scoremap(score_map) * 255).astype(np.uint8)
    _, hierarchy = cv2.findContours((image > int(tau * 255)).astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    return 0 if hierarchy is None else int((hierarchy[0][:, 3] >= 0).sum())


def test_noisy_cam_maps_match_opencv_at_every_uint8_cut():
    thresholds = np.arange(0, 1, 0.001)
    maps = _noisy_maps()
    for m in maps:
        assert _answers(m, thresholds, "benchmark") == _opencv(m, thresholds)
    # Holes and islands in holes are common in such maps.
    assert sum(_nested_contours(m, tau) > 0 for m in maps for tau in (0.2, 0.4, 0.6)) >= 12


def test_noisy_cam_maps_match_labelling_at_fine_thresholds():
    thresholds = np.arange(0, 1, 0.002)
    for m in _noisy_maps()[::2]:
        normalized = ref.normalize_scoremap(m)
        for j, (largest, boxes) in enumerate(_answers(m, thresholds, "float")):
            binary = (normalized >= thresholds[j]).astype(np.uint8)
            count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
            x, y, w, h, sizes = stats[1:].T
            expected = [tuple(box) for box in np.stack([x, y, x + w - 1, y + h - 1], axis=1).tolist()]
            assert boxes == sorted(expected)
            if count == 1:
                assert largest is None
                continue
            first = np.full(count, labels.size)
            np.minimum.at(first, labels.ravel(), np.arange(labels.size))
            tied = np.flatnonzero(sizes == sizes.max())
            assert largest == expected[min(tied, key=lambda k: first[k + 1])]


def test_region_ious_equal_box_iou_to_the_bit():
    from spgkit.localization import box_iou

    # Hand-worked: one 4x4 square at pixels 2..5; against [2, 2, 5, 7] (4x6) the IoU is 16/24; the
    # benchmark's box [2, 2, 6, 6] (5x5) meets it in 4x5: 20/29. The better ground-truth box counts.
    square = _paint((10, 10), (2, 2, 4))
    gt = np.array([[2, 2, 5, 7], [0, 0, 0, 0]])
    for protocol, iou in (("float", 16 / 24), ("benchmark", 20 / 29)):
        regions, cut_of = get_protocol(protocol).regions(square, np.array([0.5]), gt)
        assert regions.iou[regions.largest[cut_of[0]]] == iou
    # Noisy maps, many regions, fractional and degenerate ground truth (float protocol boxes).
    gt = np.array([[10.25, 3.5, 60.75, 41.0], [0, 0, 0, 0], [50, 50, 49, 80], [-3.0, 20.5, 95.5, 94.125]])
    for m in _noisy_maps()[:3]:
        for protocol in ("float", "benchmark"):
            regions, _ = get_protocol(protocol).regions(ref.normalize_scoremap(m), np.arange(0, 1, 0.01), gt)
            assert len(regions.boxes) > 100
            assert regions.iou.tobytes() == box_iou(regions.boxes, gt).max(axis=1).tobytes()
            assert get_protocol(protocol).regions(ref.normalize_scoremap(m), np.arange(0, 1, 0.01))[0].iou is None
    for protocol in ("float", "benchmark"):  # no box to score against is refused, as box_iou's max would
        with pytest.raises(ValueError, match="at least one box"):
            get_protocol(protocol).regions(square, np.array([0.5]), np.zeros((0, 4)))


# --------------------------------------------------------------------------- the readable path


def _by_cut(regions, cut_of) -> list:
    """Per threshold: the largest region's (box, IoU) or None, and the sorted (box, IoU) of all."""
    rows = [(int(c), tuple(int(v) for v in box), float(iou)) for c, box, iou in zip(regions.box_cut, regions.boxes, regions.iou)]
    out = []
    for c in cut_of.tolist():
        k = int(regions.largest[c])
        largest = None if k < 0 else (rows[k][1], rows[k][2])
        out.append((largest, sorted((box, iou) for cut, box, iou in rows if cut == c)))
    return out


def _hand_built() -> list[np.ndarray]:
    tie = np.zeros((3, 7), np.float32)
    tie[0, 5] = tie[1, 0] = 1  # two single pixels: a tie in both protocols
    return [
        _paint((5, 9), (1, 1, 3), ring=[(1, 5, 3)]),  # a contour-area tie, one square with a hole
        _paint((9, 13), (2, 2, 3), (0, 8, 4), ring=[(0, 0, 7)]),  # a ring around an island
        _paint((17, 17), (8, 8, 1), ring=[(1, 1, 15), (3, 3, 11), (5, 5, 7)]),  # nested holes and islands
        np.array([[0, 2, 2, 1, 2, 1, 0]], np.float32),  # a plateau and a peak joined at a saddle
        tie,
        np.full((4, 5), 3.0, np.float32),  # flat: nothing above 0
    ]


@pytest.mark.skipif(tree._core is None, reason="the compiled core is not in use (not built, or SPGKIT_PURE=1)")
@pytest.mark.parametrize("protocol", ["float", "benchmark"])
def test_the_readable_path_gives_the_cores_regions(protocol):
    # Same boxes at every threshold, same largest region (ties included), same IoUs to the bit.
    thresholds = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    gt = np.array([[1, 1, 4, 4], [0.5, 0, 2, 9.25]])
    for m in _hand_built():
        normalized = ref.normalize_scoremap(m)
        compiled = _by_cut(*get_protocol(protocol).regions(normalized, thresholds, gt))
        with tree.without_core():
            assert _by_cut(*get_protocol(protocol).regions(normalized, thresholds, gt)) == compiled
    # The tie of two single pixels, at 0.5: the float protocol keeps the first in raster order
    # (x 5, y 0), the benchmark the one OpenCV finds last, with the benchmark's wider box.
    with tree.without_core():
        largest = _by_cut(*get_protocol(protocol).regions(_hand_built()[4], thresholds, gt))[2][0][0]
    assert largest == ((0, 1, 1, 2) if protocol == "benchmark" else (5, 0, 5, 0))


def test_spgkit_pure_turns_the_core_off_with_one_warning():
    code = "from spgkit.localization import tree; print(tree._core)"
    env = {**os.environ, "SPGKIT_PURE": "1"}
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "None"
    assert done.stderr.count("RuntimeWarning") == 1 and "turned off (SPGKIT_PURE)" in done.stderr
