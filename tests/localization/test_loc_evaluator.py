"""LocalizationEvaluator: known answers, streaming, merging state, and errors."""

import numpy as np
import pytest
import torch

from spgkit.localization import LocalizationEvaluator, box_iou


def _box_map(size: int, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    m = np.zeros((size, size), np.float32)
    m[y0 : y1 + 1, x0 : x1 + 1] = 1
    return m


def test_box_iou_uses_inclusive_pixels():
    assert box_iou([[0, 0, 9, 9]], [[0, 0, 9, 9]])[0, 0] == 1.0
    assert box_iou([[0, 0, 9, 9]], [[0, 0, 9, 14]])[0, 0] == 100 / 150
    assert box_iou([[0, 0, 0, 0]], [[1, 1, 3, 3]])[0, 0] == 0.0
    assert box_iou([[5, 5, 4, 4]], [[5, 5, 4, 4]])[0, 0] == 0.0  # empty union counts 0


def test_a_perfect_map_in_both_modes():
    gt = np.array([[10, 10, 29, 29]])
    m = _box_map(40, (10, 10, 29, 29))
    default = LocalizationEvaluator(protocol="float")
    default.update(m[None], [gt])
    out = default.compute()
    # tau = 0 keeps the whole image (IoU 400/1600); every other threshold gives the box itself.
    assert out["maxboxacc"] == 100.0 and out["maxboxacc_threshold"] == 0.01
    assert out["maxboxaccv2"] == 100.0 and out["maxboxaccv2_iou70_threshold"] == 0.01
    assert out["gt_known_loc"] == 100.0 and out["num_images"] == 1.0
    bench = LocalizationEvaluator(protocol="benchmark")
    bench.update(m[None], [gt])
    out = bench.compute()
    # The benchmark keeps uint8 values above int(0 * 255) = 0 at tau = 0, and its box (10..30) has
    # IoU 400 / 441.
    assert out["maxboxacc"] == 100.0 and out["maxboxacc_threshold"] == 0.0


def test_iou_levels_separate():
    maps = np.stack([_box_map(30, (0, 0, 9, 9)), _box_map(30, (0, 0, 9, 9))])
    gts = [np.array([[0, 0, 9, 9]]), np.array([[0, 0, 9, 14], [20, 20, 29, 29]])]  # IoU 1 and 2/3
    ev = LocalizationEvaluator(thresholds=[0.5], protocol="float")
    ev.update(maps, gts)
    out = ev.compute()
    assert (out["maxboxaccv2_iou30"], out["maxboxaccv2_iou50"], out["maxboxaccv2_iou70"]) == (100.0, 100.0, 50.0)
    assert out["maxboxaccv2"] == pytest.approx(250 / 3)
    custom = LocalizationEvaluator(thresholds=[0.5], iou_thresholds=(60, 67.5), protocol="float")
    custom.update(maps, gts)
    assert {k for k in custom.compute() if k.startswith("maxboxaccv2_")} == {
        "maxboxaccv2_iou60",
        "maxboxaccv2_iou60_threshold",
        "maxboxaccv2_iou67.5",
        "maxboxaccv2_iou67.5_threshold",
    }
    assert custom.compute()["maxboxaccv2_iou67.5"] == 50.0


def test_top1_and_top5_need_the_box_and_the_class():
    good, bad = _box_map(20, (2, 2, 9, 9)), _box_map(20, (12, 12, 17, 17))
    maps = np.stack([good, good, bad, good])
    gts = [np.array([[2, 2, 9, 9]])] * 4
    ev = LocalizationEvaluator(thresholds=[0.5], protocol="float")
    ev.update(maps, gts, top1_correct=[True, False, True, True], top5_correct=torch.tensor([True, True, True, False]))
    out = ev.compute()
    assert (out["gt_known_loc"], out["top1_loc"], out["top5_loc"]) == (75.0, 50.0, 50.0)
    partial = LocalizationEvaluator(thresholds=[0.5], protocol="float")
    partial.update(maps[:2], gts[:2], top1_correct=[True, True])
    partial.update(maps[2:], gts[2:])
    with pytest.raises(ValueError, match="top1_correct was given for 2 of 4 images"):
        partial.compute()


def test_pxap_known_answers():
    m = np.array([[[0.0, 0.5, 1.0, 0.25]]], np.float32)
    mask = np.array([[[False, True, False, True]]])
    ignore = np.array([[[True, False, False, False]]])
    box = [np.array([[0, 0, 3, 0]])]

    def pxap(protocol, **kw):
        ev = LocalizationEvaluator(thresholds=[0.0, 0.3, 0.6], protocol=protocol)
        ev.update(m, box, masks=mask, **kw)
        return ev.compute()["pxap"]

    # tau 0.6: P 0, R 0; tau 0.3: P 1/2, R 1/2; tau 0: P 1/2 (2/3 without the ignored pixel), R 1.
    assert pxap("float") == pytest.approx(50.0)
    assert pxap("float", ignore=ignore) == pytest.approx(100 * (0.25 + 0.5 * 2 / 3))
    # The benchmark bins [0, .3), [.3, .6), [.6, 1), [1, 2), [2, 3]; cumulated from the top:
    # tp 0 0 0 1 2, fp 0 1 1 1 2 (1 1 1 1 1 with the ignored pixel left out), so precision
    # - 0 0 1/2 1/2 (2/3) and recall 0 0 0 1/2 1: the same two steps as above.
    assert pxap("benchmark") == pytest.approx(50.0)
    assert pxap("benchmark", ignore=ignore) == pytest.approx(100 * (0.25 + 0.5 * 2 / 3))
    no_masks = LocalizationEvaluator(protocol="float")
    no_masks.update(m, box)
    assert "pxap" not in no_masks.compute()


def test_benchmark_pxap_counts_the_last_recall_step():
    # Scores 1.0 (object), 0.6 (background), 0.2 (object), 0.0 (background); thresholds 0 and 0.5.
    # Bins [0, .5), [.5, 1), [1, 2), [2, 3]: object 1 0 1 0, background 1 1 0 0. Cumulated from the
    # top: tp 0 1 1 2, fp 0 0 1 2; precision - 1 1/2 1/2, recall 0 1/2 1/2 1. The benchmark's
    # (precision[1:] * diff(recall))[non_zero[1:]].sum() = 1 * 1/2 + 1/2 * 0 + 1/2 * 1/2 = 3/4.
    # Leaving out the last step, as spgkit and its reference script once did, gives 1/2.
    ev = LocalizationEvaluator(thresholds=[0.0, 0.5], protocol="benchmark")
    ev.update(
        np.array([[[1.0, 0.6], [0.2, 0.0]]], np.float32),
        [np.array([[0, 0, 1, 1]])],
        masks=np.array([[[True, False], [True, False]]]),
    )
    assert ev.compute()["pxap"] == pytest.approx(75.0)


def _batches(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n = int(rng.integers(1, 5))
        yy, xx = np.mgrid[0:24, 0:32]
        maps = np.stack(
            [np.exp(-((yy - rng.uniform(0, 24)) ** 2 + (xx - rng.uniform(0, 32)) ** 2) / 60) for _ in range(n)]
        )
        boxes = [
            np.array([[rng.integers(0, 10), rng.integers(0, 8), rng.integers(12, 32), rng.integers(10, 24)]])
            for _ in range(n)
        ]
        yield maps.astype(np.float32), boxes, rng.random(n) < 0.7, maps > 0.5


@pytest.mark.parametrize("protocol", ["float", "benchmark"])
def test_streaming_and_merging_give_the_same_counts(protocol):
    batches = list(_batches(0, 8))
    whole = LocalizationEvaluator(protocol=protocol)
    whole.update(
        np.concatenate([b[0] for b in batches]),
        [box for b in batches for box in b[1]],
        top1_correct=np.concatenate([b[2] for b in batches]),
        masks=np.concatenate([b[3] for b in batches]),
    )
    ranks = [LocalizationEvaluator(protocol=protocol) for _ in range(2)]
    for k, (maps, boxes, top1, masks) in enumerate(batches):
        ranks[k % 2].update(maps, boxes, top1_correct=top1, masks=masks)
    # Memory does not grow with images: the state has the same shapes after any number of batches.
    assert {k: v.shape for k, v in ranks[0].state_dict().items()} == {k: v.shape for k, v in whole.state_dict().items()}
    summed = LocalizationEvaluator(protocol=protocol)
    summed.load_state_dict({k: ranks[0].state_dict()[k] + ranks[1].state_dict()[k] for k in whole.state_dict()})
    assert summed.compute() == whole.compute()
    ranks[0].merge(ranks[1])
    assert ranks[0].compute() == whole.compute()
    assert whole.compute()["num_images"] == sum(len(b[1]) for b in batches)


def test_state_dict_checks():
    ev = LocalizationEvaluator(protocol="float")
    other = LocalizationEvaluator(thresholds=np.arange(0, 1, 0.001), protocol="float")
    with pytest.raises(ValueError, match="shape"):
        ev.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="same thresholds"):
        ev.merge(other)
    with pytest.raises(ValueError, match="missing"):
        ev.load_state_dict({})
    with pytest.raises(ValueError, match="no images"):
        ev.compute()


def test_update_errors_name_the_image():
    maps = np.ones((3, 8, 8), np.float32)
    boxes = [np.array([[0, 0, 3, 3]])] * 3
    ev = LocalizationEvaluator(protocol="float")
    bad = maps.copy()
    bad[2, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"maps\[2\] contains NaN or infinite"):
        ev.update(bad, boxes)
    with pytest.raises(ValueError, match=r"gt_boxes\[1\] is empty"):
        ev.update(maps, [boxes[0], np.zeros((0, 4)), boxes[2]])
    with pytest.raises(ValueError, match=r"gt_boxes\[0\] must have shape \(n, 4\)"):
        ev.update(maps, [np.zeros((2, 3))] + boxes[1:])
    with pytest.raises(ValueError, match="gt_boxes has 2 entries for 3 maps"):
        ev.update(maps, boxes[:2])
    with pytest.raises(ValueError, match=r"masks must have the maps' shape \(3, 8, 8\)"):
        ev.update(maps, boxes, masks=np.ones((3, 8, 7), bool))
    with pytest.raises(ValueError, match="ignore regions need masks"):
        ev.update(maps, boxes, ignore=np.ones((3, 8, 8), bool))
    with pytest.raises(ValueError, match=r"top1_correct must have shape \(3,\)"):
        ev.update(maps, boxes, top1_correct=[True])
    with pytest.raises(ValueError, match="shape"):
        ev.update(maps[0, 0], boxes)
    assert int(ev.state_dict()["num_images"]) == 0  # nothing was counted


def test_constructor_checks():
    with pytest.raises(ValueError, match="strictly increasing"):
        LocalizationEvaluator(thresholds=[0.1, 0.1], protocol="float")
    with pytest.raises(ValueError, match="iou_thresholds"):
        LocalizationEvaluator(iou_thresholds=(0, 50), protocol="float")
    with pytest.raises(ValueError, match="cam_threshold"):
        LocalizationEvaluator(cam_threshold=1.5, protocol="float")
    with pytest.raises(ValueError, match="float protocol only"):
        LocalizationEvaluator(protocol="benchmark", backend="torch")


def test_kept_images_hand_worked():
    # Image 0: one square (0..9) against a taller box: IoU 150/900 with the whole image at tau 0,
    # 100/150 at tau 0.5. Image 1: a big square A (0..9) and a small one B (20..25) on B's box: at
    # tau 0.5 the largest region (A) misses it and the best (B) hits it. Image 2: a flat map, with
    # no region above 0 in the float protocol.
    a, b = _box_map(30, (0, 0, 9, 9)), _box_map(30, (20, 20, 25, 25))
    maps = np.stack([a, a + b, np.zeros((30, 30), np.float32)])
    gts = [np.array([[0, 0, 9, 14]]), np.array([[20, 20, 25, 25]]), np.array([[0, 0, 29, 29]])]
    kept = LocalizationEvaluator(thresholds=[0.0, 0.5], protocol="float", keep_images=True)
    kept.update(maps[:2], gts[:2])
    kept.update(maps[2:], gts[2:])  # streaming keeps the order
    images = kept.images()
    assert np.array_equal(images["largest_iou"], [[150 / 900, 2 / 3], [36 / 900, 0], [1, 0]])
    assert np.array_equal(images["best_iou"], [[150 / 900, 2 / 3], [36 / 900, 1], [1, 0]])
    # At the CAM threshold 0.2: square A in images 0 and 1, nothing in the flat one.
    assert np.array_equal(images["cam_iou"], [2 / 3, 0, 0])
    assert images["cam_box"].tolist() == [[0, 0, 9, 9], [0, 0, 9, 9], [-1, -1, -1, -1]]
    plain = LocalizationEvaluator(thresholds=[0.0, 0.5], protocol="float")
    plain.update(maps, gts)
    assert kept.compute() == plain.compute()  # keeping images changes no count
    with pytest.raises(ValueError, match="keep_images=True"):
        plain.images()
    # The benchmark's box is one pixel wider than the region (10..30): IoU 400/441.
    bench = LocalizationEvaluator(protocol="benchmark", keep_images=True)
    bench.update(_box_map(40, (10, 10, 29, 29))[None], [np.array([[10, 10, 29, 29]])])
    assert bench.images()["cam_box"].tolist() == [[10, 10, 30, 30]] and bench.images()["cam_iou"][0] == 400 / 441
    merged = LocalizationEvaluator(thresholds=[0.0, 0.5], protocol="float", keep_images=True)
    merged.update(maps[:1], gts[:1])
    other = LocalizationEvaluator(thresholds=[0.0, 0.5], protocol="float", keep_images=True)
    other.update(maps[1:], gts[1:])
    merged.merge(other)
    assert all(np.array_equal(merged.images()[k], images[k]) for k in images)
