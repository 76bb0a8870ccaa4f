"""The batched torch path gives the numpy path's counts exactly (checked on the CPU; on CUDA too
where there is one)."""

import numpy as np
import pytest
import torch

from spgkit.localization import LocalizationEvaluator
from spgkit.localization.torch_eval import component_labels


def test_component_labels_are_8_connected_components():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    stack = rng.random((6, 20, 27)) < rng.uniform(0.3, 0.7, (6, 1, 1))
    labels = component_labels(torch.from_numpy(stack)).numpy()
    for plane, binary in zip(labels, stack, strict=True):
        count, reference = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
        # Same partition, and each label is the row-major index of its region's first pixel.
        first = np.full(count, binary.size)
        np.minimum.at(first, reference.ravel(), np.arange(binary.size))
        expected = np.where(binary, first[reference], binary.size)
        assert np.array_equal(plane, expected)


def _evaluate(maps, boxes, backend, device="cpu", steps=0.04):
    ev = LocalizationEvaluator(thresholds=np.arange(0, 1, steps), cam_threshold=0.33, backend=backend, protocol="float")
    for start in range(0, len(maps), 16):
        ev.update(torch.from_numpy(maps[start : start + 16]).to(device), boxes[start : start + 16])
    return ev.state_dict()


def _sample(seed: int):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:48]
    maps = []
    for _ in range(40):
        m = np.zeros((40, 48))
        for _ in range(rng.integers(1, 5)):
            m += rng.uniform(0.2, 1) * np.exp(
                -((yy - rng.uniform(0, 40)) ** 2 + (xx - rng.uniform(0, 48)) ** 2) / rng.uniform(10, 200)
            )
        maps.append(m)
    maps[0][:] = 1.0  # flat
    maps[1][:] = 0.0
    maps[1][[5, 6, 7], [5, 6, 7]] = 1.0  # diagonal pixels
    maps[2] = np.kron(rng.integers(0, 3, (10, 12)), np.ones((4, 4)))  # plateaus and ties
    boxes = [
        np.array(
            [[rng.integers(0, 20), rng.integers(0, 16), rng.integers(24, 48), rng.integers(20, 40)]]
            * int(rng.integers(1, 3))
        )
        for _ in maps
    ]
    return np.stack(maps).astype(np.float32), boxes


def test_torch_path_equals_numpy_path_on_cpu():
    maps, boxes = _sample(1)
    torch_counts = _evaluate(maps, boxes, "torch")
    numpy_counts = _evaluate(maps, boxes, "numpy")
    for key in numpy_counts:
        assert np.array_equal(torch_counts[key], numpy_counts[key]), key
    assert 0 < numpy_counts["box_correct"].sum() < numpy_counts["box_correct"].size * 40


@pytest.mark.gpu
def test_cuda_maps_use_the_torch_path_with_identical_counts():
    maps, boxes = _sample(2)
    cuda_counts = _evaluate(maps, boxes, "auto", device="cuda", steps=0.01)
    numpy_counts = _evaluate(maps, boxes, "numpy", steps=0.01)
    for key in numpy_counts:
        assert np.array_equal(cuda_counts[key], numpy_counts[key]), key


def test_torch_path_keeps_the_numpy_paths_images():
    maps, boxes = _sample(3)  # a flat map among them: no box at the CAM threshold
    kept = {}
    for backend in ("torch", "numpy"):
        ev = LocalizationEvaluator(thresholds=np.arange(0, 1, 0.04), cam_threshold=0.33, backend=backend, protocol="float", keep_images=True)
        for start in range(0, len(maps), 16):
            ev.update(torch.from_numpy(maps[start : start + 16]), boxes[start : start + 16])
        kept[backend] = ev.images()
    for key, value in kept["numpy"].items():
        assert np.array_equal(kept["torch"][key], value), key
    assert kept["numpy"]["cam_box"][0].tolist() == [-1, -1, -1, -1] and (kept["numpy"]["cam_box"][1:] >= 0).all()
