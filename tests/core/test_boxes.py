"""spgkit's one box convention (spgkit.boxes): its checker and every conversion at the
edges, on hand-worked boxes."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from spgkit.boxes import (
    MISSING,
    NO_BOXES,
    BoxError,
    box_iou,
    check_boxes,
    from_inclusive,
    from_xywh,
    mask_box,
    rescale,
    table_boxes,
)
from spgkit.data import DataError, FolderCSV
from spgkit.localization import largest_region_box, resize_gt_boxes, threshold_boxes

# ------------------------------------------------------------------------------- the checker


def test_boxes_that_follow_the_convention_pass_unchanged():
    boxes = np.array([[0, 0, 10, 8], [3.5, 2, 4, 2.25]])  # the whole 10 x 8 image; a fractional box
    assert check_boxes(boxes, (8, 10)) is boxes
    assert check_boxes(NO_BOXES, (8, 10)) is NO_BOXES  # no box is an empty (0, 4) array
    assert check_boxes(np.array([[5, 5, 1e6, 1e6]], np.float32)) is not None  # no size: only what needs none


@pytest.mark.parametrize(
    "boxes, message",
    [
        # x1 = 11 is one column past a 10-pixel-wide image (columns 0..9, so x1 <= 10).
        (np.array([[0.0, 0, 11, 8]]), "boxes[0]: box (0, 0, 11, 8) lies outside the 10x8 image"),
        (np.array([[0.0, 0, 10, 8], [-1, 0, 3, 3]]), "boxes[1]: box (-1, 0, 3, 3) lies outside the 10x8 image"),
        # x1 < x0, and x1 == x0 (no pixel): both empty.
        (np.array([[5.0, 1, 2, 4]]), "boxes[0]: box (5, 1, 2, 4) is empty (needs x0 < x1 and y0 < y1)"),
        (np.array([[2.0, 1, 2, 4]]), "boxes[0]: box (2, 1, 2, 4) is empty (needs x0 < x1 and y0 < y1)"),
        (np.array([[0.0, np.nan, 2, 4]]), "boxes[0]: box (0, nan, 2, 4) has a NaN or infinite coordinate"),
        # The wrong dtype or shape.
        (np.array([[0, 0, 2, 2]]), "boxes must be a float numpy array, not an array of int64"),
        ([[0.0, 0, 2, 2]], "boxes must be a float numpy array, not list"),
        (torch.zeros(1, 4), "boxes must be a float numpy array, not Tensor"),
        (np.array([0.0, 0, 2, 2]), "boxes must have shape (n, 4), not (4,)"),
        (np.zeros((2, 5)), "boxes must have shape (n, 4), not (2, 5)"),
    ],
)
def test_the_checker_names_the_box_at_fault(boxes, message):
    with pytest.raises(BoxError, match=f"^{re.escape(message)}$"):
        check_boxes(boxes, (8, 10))


def test_without_a_size_only_negative_starts_and_empty_boxes_fail():
    with pytest.raises(BoxError, match=re.escape("box (-2, 0, 3, 3) starts at a negative coordinate, outside any image")):
        check_boxes(np.array([[-2.0, 0, 3, 3]]))


# ---------------------------------------------------------------------------- the conversions


def test_inclusive_boxes_gain_one_pixel_on_the_right_and_bottom():
    # Pixels 3..5 inclusive are columns [3, 6); rows 4..6 are [4, 7).
    assert from_inclusive([3, 4, 5, 6]).tolist() == [[3, 4, 6, 7]]
    # An x1 written equal to the width (10) means "up to the border" and stays; y1 = 6 of 8 rows gains 1.
    assert from_inclusive([[0, 0, 10, 6], [0, 0, 9, 7]], (8, 10)).tolist() == [[0, 0, 10, 7], [0, 0, 10, 8]]
    assert from_inclusive(NO_BOXES).shape == (0, 4)


def test_xywh_and_mask_boxes():
    assert from_xywh((1.5, 2, 3, 4)).tolist() == [[1.5, 2, 4.5, 6]]  # CUB: w = 3 columns from x = 1.5
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True  # rows 1..2, columns 2..4
    assert mask_box(mask).tolist() == [[2, 1, 5, 3]] and mask_box(mask).dtype == np.float32
    assert mask_box(np.zeros((5, 6), bool)) is NO_BOXES


def test_boxes_rescale_with_the_image():
    # From a 224 x 224 network input to a 448-wide, 112-high image: x times 2, y times 0.5.
    assert rescale(np.array([[10.0, 20, 30, 40]]), (224, 224), (112, 448)).tolist() == [[20, 10, 60, 20]]
    assert rescale(NO_BOXES, (224, 224), (112, 448)).shape == (0, 4)


def test_the_evaluators_table_comes_back_as_spgkit_boxes():
    table = np.array([[0, 0, 9, 9], [MISSING] * 4, [2, 3, 2, 3]])  # inclusive; the third is one pixel
    boxes = table_boxes(table)
    assert [b.tolist() for b in boxes] == [[[0, 0, 10, 10]], [], [[2, 3, 3, 4]]]
    assert boxes[1] is NO_BOXES


def test_the_protocols_conversion_is_the_only_way_in_and_checks_what_comes():
    # A 10 x 8 image's box over columns 2..5, rows 1..3: [2, 1, 6, 4), the same image size:
    # the benchmark's inclusive (2, 1, 5, 3), with its IoU counting 4 x 3 pixels.
    box = np.array([[2.0, 1, 6, 4]])
    gt = resize_gt_boxes(box, (8, 10), (8, 10))
    assert gt.tolist() == [[2, 1, 5, 3]]
    assert box_iou(gt, gt).tolist() == [[1.0]]
    with pytest.raises(BoxError, match=re.escape("boxes[0]: box (2, 1, 11, 4) lies outside the 10x8 image")):
        resize_gt_boxes(np.array([[2.0, 1, 11, 4]]), (8, 10), (8, 10))


def test_a_map_box_leaves_the_evaluator_in_spgkit_convention():
    m = np.zeros((6, 8), np.float32)
    m[1:3, 2:6] = 1  # rows 1..2, columns 2..5
    for protocol in ("float", "benchmark"):
        inclusive = threshold_boxes(m, [0.5], protocol=protocol).largest[0].tolist()
        found = largest_region_box(m, 0.5, protocol=protocol)
        assert found.tolist() == from_inclusive(inclusive).tolist() and found.dtype == np.float64
    assert largest_region_box(m, 0.5, protocol="float").tolist() == [[2, 1, 6, 3]]  # tight
    assert largest_region_box(np.ones((6, 8), np.float32), 0.5, protocol="float") is NO_BOXES  # flat: no pixel passes


# ------------------------------------------------------------------------------- the readers


def test_a_reader_names_itself_the_file_and_the_box_that_breaks_the_convention(tmp_path):
    Image.new("RGB", (10, 8)).save(tmp_path / "a.png")
    (tmp_path / "train.csv").write_text("image,label,x0,y0,x1,y1\na.png,cat,2,1,6,4\n")
    data = FolderCSV(tmp_path)
    assert data[0]["boxes"].tolist() == [[2, 1, 6, 4]]
    data.records[0].boxes = np.array([[2, 1, 11, 4]], np.float32)  # as a faulty reader might make it
    with pytest.raises(DataError) as error:
        data[0]
    assert str(error.value) == f"{tmp_path / 'a.png'}: FolderCSV: boxes[0]: box (2, 1, 11, 4) lies outside the 10x8 image"
