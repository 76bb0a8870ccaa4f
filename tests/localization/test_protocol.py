"""The two evaluation protocols end to end: maps resized and normalised, ground-truth boxes resized,
and a model's metrics equal to the WSOL benchmark's procedure run on the same CAMs."""

import cv2
import numpy as np
import pytest
import torch

from spgkit.data import SynthWSOL, eval_transform
from spgkit.config import PROTOCOLS
from spgkit.localization import get_protocol, readable as ref
from spgkit.localization import resize_gt_boxes, score_maps, threshold_grid
from spgkit.model import build_model
from spgkit.evaluate import evaluate


def test_benchmark_maps_are_cv2_cubic_then_normalize_scoremap():
    rng = np.random.default_rng(0)
    cams = np.concatenate([rng.normal(size=(3, 14, 14)), rng.normal(size=(1, 14, 14)) * 1e-3]).astype(np.float32)
    got = score_maps(torch.from_numpy(cams), (224, 224), "benchmark").numpy()
    for cam, mine in zip(cams, got):
        expected = ref.normalize_scoremap(cv2.resize(cam, (224, 224), interpolation=cv2.INTER_CUBIC))
        assert mine.dtype == np.float32 and np.array_equal(mine, expected)
    # torch's bicubic kernel is the same up to rounding, which is enough to move uint8 levels.
    torch_cubic = torch.nn.functional.interpolate(torch.from_numpy(cams)[:, None], size=(224, 224), mode="bicubic")[:, 0]
    assert not np.array_equal((got * 255).astype(np.uint8), (ref.normalize_scoremap(torch_cubic.numpy()) * 255).astype(np.uint8))
    # A map with NaN, or one with no range, becomes all zeros (the benchmark's normalize_scoremap).
    odd = np.stack([np.full((14, 14), 3.0), np.full((14, 14), np.nan)]).astype(np.float32)
    assert not score_maps(odd, (28, 28), "benchmark").any()


def test_float_maps_are_bilinear_then_min_max():
    cam = torch.tensor([[[0.0, 4.0]]])  # 1 x 2 -> 1 x 4: samples at -0.25, 0.25, 0.75, 1.25 (clamped)
    assert score_maps(cam, (1, 4), "float").tolist() == [[[0.0, 0.25, 0.75, 1.0]]]
    with pytest.raises(ValueError, match="unknown evaluation protocol 'opencv'"):
        score_maps(cam, (1, 4), "opencv")


def test_protocols_are_looked_up_by_their_names_in_the_config():
    for name, description in PROTOCOLS.items():
        assert get_protocol(name).name == name and get_protocol(name).description == description
    with pytest.raises(ValueError, match=r"^unknown evaluation protocol 'Float'; use one of \['benchmark', 'float'\]$"):
        get_protocol("Float")


def test_score_maps_are_tensors_in_both_protocols():
    cam = np.array([[[0.0, 4.0]]], np.float32)  # numpy in, a CPU tensor out, no protocol aside
    assert score_maps(cam, (1, 4), "float").tolist() == [[[0.0, 0.25, 0.75, 1.0]]]
    bench = score_maps(cam, (1, 4), "benchmark")
    assert isinstance(bench, torch.Tensor) and bench.dtype == torch.float32
    # A NaN map becomes zeros without touching the resized maps the caller holds.
    resized = np.array([[[1.0, np.nan]], [[1.0, 3.0]]], np.float32)
    assert get_protocol("benchmark").normalize(resized).tolist() == [[[0.0, 0.0]], [[0.0, 1.0]]]
    assert np.isnan(resized[0, 0, 1])


def test_foreground_of_a_threshold_in_each_protocol():
    # uint8 levels 0, 127, 128, 255; the benchmark's cut int(0.5 * 255) = 127 keeps levels > 127.
    maps = np.array([[[0.0, 0.5, 0.502, 1.0]]], np.float32)
    assert get_protocol("float").foreground(maps, 0.5).tolist() == [[[False, True, True, True]]]
    assert get_protocol("benchmark").foreground(maps, 0.5).tolist() == [[[False, False, True, True]]]


def test_ground_truth_boxes_resized_like_the_benchmark():
    # A 500 x 375 image, box over columns 100..300 and rows 50..199 (x1, y1 exclusive: 301, 200).
    # The benchmark's resize_bbox on its inclusive box (100, 50, 300, 199) to 224 x 224:
    # int(100 * 224 / 500) = int(44.8) = 44, int(50 * 224 / 375) = int(29.87) = 29,
    # int(300 * 224 / 500) = int(134.4) = 134, int(199 * 224 / 375) = int(118.87) = 118.
    box = np.array([[100, 50, 301, 200]], np.float32)
    assert resize_gt_boxes(box, (375, 500), (224, 224), "benchmark").tolist() == [[44, 29, 134, 118]]
    # Float protocol: corners scaled exactly, then x1, y1 made inclusive.
    got = resize_gt_boxes(box, (375, 500), (224, 224), "float")
    assert got == pytest.approx(np.array([[44.8, 50 * 224 / 375, 301 * 0.448 - 1, 200 * 224 / 375 - 1]]))


def test_threshold_grid_is_the_benchmarks_arange():
    assert np.array_equal(threshold_grid(100), np.arange(0, 1, 0.01))
    assert np.array_equal(threshold_grid(1000), np.arange(0, 1, 0.001))
    assert not np.array_equal(threshold_grid(100), np.arange(100) / 100)  # differs in the last bit


def test_evaluate_equals_the_benchmark_procedure_on_the_same_cams(registry):
    # SynthWSOL images of 48 px evaluated at 40 px, so boxes and masks are resized too.
    torch.manual_seed(0)
    model = build_model(3, [], registry=registry, classifier_width=16, backbone_args={"large_feature_map": True}).eval()
    raw = SynthWSOL(num_images=12, image_size=48, num_classes=3, split="test")
    data = SynthWSOL(num_images=12, image_size=48, num_classes=3, split="test", transform=eval_transform(40, (0.5,) * 3, (0.5,) * 3))
    thresholds = threshold_grid(100)
    v1 = ref.BoxEvaluator(thresholds, iou_thresholds=(50,), multi_contour_eval=False)
    v2 = ref.BoxEvaluator(thresholds, iou_thresholds=(30, 50, 70), multi_contour_eval=True)
    pixels = ref.MaskEvaluator(thresholds)
    for i in range(len(data)):
        sample, original = data[i], raw[i]
        with torch.no_grad():
            cam = model(sample["image"][None]).classifier.cams[0, sample["label"]].numpy()
        scoremap = ref.normalize_scoremap(cv2.resize(cam, (40, 40), interpolation=cv2.INTER_CUBIC))
        x0, y0, x1, y1 = original["boxes"][0].tolist()
        inclusive = (x0, y0, x1 - 1, y1 - 1)  # the benchmark's box convention
        gt = [[int(c * 40 / 48) for c in inclusive]]
        v1.accumulate(scoremap, gt)
        v2.accumulate(scoremap, gt)
        mask = cv2.resize(original["mask"].numpy().astype(np.float32), (40, 40), interpolation=cv2.INTER_NEAREST) > 0.5
        pixels.accumulate(scoremap, mask)
    got = evaluate(model, data, torch.device("cpu"), batch_size=5, protocol="benchmark")
    assert (got["maxboxacc"], got["maxboxacc_threshold"]) == v1.compute()[50]
    for delta, (accuracy, threshold) in v2.compute().items():
        assert (got[f"maxboxaccv2_iou{delta}"], got[f"maxboxaccv2_iou{delta}_threshold"]) == (accuracy, threshold)
    assert got["pxap"] == pixels.compute()
    floats = evaluate(model, data, torch.device("cpu"), batch_size=5, protocol="float")
    assert floats["pxap"] != got["pxap"]  # the protocols are not the same numbers
