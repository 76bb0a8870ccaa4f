"""Hand-built maps with known boxes, in the default mode and the benchmark (OpenCV) mode."""

import numpy as np
import pytest
import torch

from spgkit.localization import largest_region_box, normalize_maps, resize_maps, threshold_boxes


def _boxes(result, j=0) -> list[tuple[int, ...]]:
    return sorted(tuple(int(v) for v in box) for box in result.boxes_at(j))


def _opencv(binary: np.ndarray):
    """OpenCV's contour boxes (benchmark convention) and largest contour box of a binary image."""
    cv2 = pytest.importorskip("cv2")
    contours = cv2.findContours(binary.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    h, w = binary.shape

    def box(c):
        x, y, bw, bh = cv2.boundingRect(c)
        return (x, y, min(x + bw, w - 1), min(y + bh, h - 1))

    return sorted(box(c) for c in contours), box(max(contours, key=cv2.contourArea))


def ring() -> np.ndarray:
    # A square ring two pixels thick around a 3x3 hole, centred in a 9x9 map.
    yy, xx = np.mgrid[0:9, 0:9]
    return np.isin(np.maximum(abs(yy - 4), abs(xx - 4)), (2, 3)).astype(np.float32)


def test_ring_has_an_inner_contour():
    m = ring()
    default = threshold_boxes(m, [0.5], protocol="float")
    assert _boxes(default) == [(1, 1, 7, 7)]
    bench = threshold_boxes(m, [0.5], protocol="benchmark")
    # Outer box one pixel wider than the ring; the hole (3..5) grown by one pixel, and +1 again.
    assert _boxes(bench) == [(1, 1, 8, 8), (2, 2, 7, 7)]
    assert tuple(bench.largest[0]) == (1, 1, 8, 8)
    assert (_boxes(bench), tuple(bench.largest[0])) == _opencv(m > 0.5)


def test_diagonal_pixels_are_one_region():
    m = np.zeros((6, 6), np.float32)
    m[[1, 2, 3], [1, 2, 3]] = 1
    assert _boxes(threshold_boxes(m, [0.5], protocol="float")) == [(1, 1, 3, 3)]
    assert _boxes(threshold_boxes(m, [0.5], protocol="benchmark")) == [(1, 1, 4, 4)]
    m[2, 2] = 0  # the gap splits them
    assert _boxes(threshold_boxes(m, [0.5], protocol="float")) == [(1, 1, 1, 1), (3, 3, 3, 3)]


def test_diamond_encloses_a_4_connected_hole():
    # Four pixels around (2, 2) touch diagonally: one 8-connected region with a one-pixel hole.
    m = np.zeros((5, 5), np.float32)
    m[[1, 2, 2, 3], [2, 1, 3, 2]] = 1
    assert _boxes(threshold_boxes(m, [0.5], protocol="float")) == [(1, 1, 3, 3)]
    bench = threshold_boxes(m, [0.5], protocol="benchmark")
    assert _boxes(bench) == [(1, 1, 4, 4), (1, 1, 4, 4)]  # outer and inner contour
    assert (_boxes(bench), tuple(bench.largest[0])) == _opencv(m > 0.5)


def test_largest_is_pixel_count_by_default_and_polygon_area_in_benchmark():
    m = np.zeros((12, 20), np.float32)
    m[2, 2:14] = 1  # a 12-pixel line: polygon area 0
    m[6:9, 5:8] = 1  # a 3x3 square: 9 pixels, polygon area 4
    assert largest_region_box(m, 0.5, protocol="float").tolist() == [[2, 2, 14, 3]]
    assert largest_region_box(m, 0.5, protocol="benchmark").tolist() == [[5, 6, 9, 10]]
    assert _opencv(m > 0.5)[1] == (5, 6, 8, 9)


def test_ties_follow_each_definition():
    m = np.zeros((7, 7), np.float32)
    m[1:3, 1:3] = 1
    m[4:6, 0:2] = 1  # same size, first pixel later in row-major order
    assert largest_region_box(m, 0.5, protocol="float").tolist() == [[1, 1, 3, 3]]  # default: the region met first
    assert largest_region_box(m, 0.5, protocol="benchmark").tolist() == [[0, 4, 3, 7]]  # OpenCV lists it first
    assert _opencv(m > 0.5)[1] == (0, 4, 2, 6)


def test_benchmark_boxes_are_clipped_at_the_border():
    m = np.zeros((6, 6), np.float32)
    m[3:6, 4:6] = 1
    assert largest_region_box(m, 0.5, protocol="float").tolist() == [[4, 3, 6, 6]]
    assert largest_region_box(m, 0.5, protocol="benchmark").tolist() == [[4, 3, 6, 6]]
    m = np.zeros((6, 6), np.float32)
    m[1:3, 1:3] = 1
    assert largest_region_box(m, 0.5, protocol="benchmark").tolist() == [[1, 1, 4, 4]]


def test_benchmark_thresholds_the_truncated_uint8_map():
    # 0.5 becomes uint8 127 and the cut int(0.5 * 255) = 127 keeps only values above it.
    m = np.array([[0.0, 0.5, 1.0, 0.0, 0.5, 0.5]], np.float32)
    assert largest_region_box(m, 0.5, protocol="float").tolist() == [[1, 0, 3, 1]]
    assert largest_region_box(m, 0.5, protocol="benchmark").tolist() == [[2, 0, 4, 1]]


def test_flat_map_is_all_zeros():
    m = np.full((5, 7), 3.0, np.float32)
    default = threshold_boxes(m, [0.0, 0.5], protocol="float")
    assert _boxes(default, 0) == [(0, 0, 6, 4)]  # every pixel is >= 0
    assert _boxes(default, 1) == [] and not default.has_largest[1]
    assert largest_region_box(m, 0.5, protocol="float").shape == (0, 4)  # no box
    bench = threshold_boxes(m, [0.0, 0.5], protocol="benchmark")
    assert _boxes(bench, 0) == _boxes(bench, 1) == [(0, 0, 0, 0)]  # no contour: the benchmark's box
    assert np.array_equal(normalize_maps(m), np.zeros_like(m))


def test_every_threshold_of_a_ramp():
    m = np.tile(np.arange(10, dtype=np.float32), (3, 1))  # columns 0..9, normalised to j / 9
    result = threshold_boxes(m, np.arange(0, 1, 0.1), protocol="float")
    for j, tau in enumerate(np.arange(0, 1, 0.1)):
        first_column = int(np.ceil(tau * 9 - 1e-9))
        assert tuple(result.largest[j]) == (first_column, 0, 9, 2)


def test_bad_inputs_are_named():
    m = np.ones((2, 4, 4), np.float32)
    m[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"score_map\[0\] contains NaN"):
        threshold_boxes(m[1], [0.5], protocol="float")
    with pytest.raises(ValueError, match=r"maps\[1\] contains NaN"):
        normalize_maps(m)
    with pytest.raises(ValueError, match="strictly increasing"):
        threshold_boxes(m[0], [0.5, 0.2], protocol="float")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        threshold_boxes(m[0], [1.5], protocol="float")
    with pytest.raises(ValueError, match="shape"):
        threshold_boxes(np.ones((2, 2, 2, 2)), [0.5])


def test_normalize_and_resize_agree_across_numpy_and_torch():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 5, 6)).astype(np.float32)
    maps[2] = 7.0  # flat
    as_numpy = normalize_maps(maps)
    as_torch = normalize_maps(torch.from_numpy(maps))
    assert as_numpy.dtype == np.float32 and np.array_equal(as_numpy, as_torch.numpy())
    assert as_numpy[:2].min() == 0 and as_numpy[:2].max() == 1 and not as_numpy[2].any()
    assert normalize_maps(maps.astype(np.float64)).dtype == np.float64
    resized = resize_maps(maps, (10, 12))
    expected = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size=(10, 12), mode="bilinear")
    assert isinstance(resized, np.ndarray) and np.array_equal(resized, expected[:, 0].numpy())
    assert resize_maps(torch.from_numpy(maps[0]), (4, 4)).shape == (4, 4)
