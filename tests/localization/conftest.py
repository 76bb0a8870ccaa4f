"""Random localization maps for the localization tests."""

import numpy as np
import pytest


def smooth_map(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A sum of 1-5 Gaussian blobs, float32, like an upsampled CAM."""
    yy, xx = np.mgrid[0:height, 0:width]
    out = np.zeros((height, width))
    for _ in range(rng.integers(1, 6)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        sigma = rng.uniform(0.05, 0.3) * max(height, width)
        out += rng.uniform(0.2, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return out.astype(np.float32)


def blocky_map(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Coarse noise blown up and quantised to a few levels: holes, islands in holes, plateaus and
    tied regions at many thresholds, which smooth maps rarely give."""
    cell = int(rng.integers(1, 4))
    coarse = rng.integers(0, int(rng.integers(2, 7)), (height // cell + 1, width // cell + 1))
    return np.kron(coarse, np.ones((cell, cell)))[:height, :width].astype(np.float32)


def random_map(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Mostly smooth maps; one in ten blocky, at most 48 pixels a side (OpenCV is slow on them)."""
    if rng.random() < 0.1:
        return blocky_map(rng, min(height, 48), min(width, 48))
    return smooth_map(rng, height, width)


def random_gt_boxes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """1-3 random inclusive boxes of a decent size, so that IoUs spread over [0, 1]."""
    boxes = []
    for _ in range(rng.integers(1, 4)):
        w, h = rng.integers(width // 4, width + 1), rng.integers(height // 4, height + 1)
        x0, y0 = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
        boxes.append([x0, y0, x0 + w - 1, y0 + h - 1])
    return np.asarray(boxes, dtype=np.float64)


@pytest.fixture
def maps_and_boxes():
    """``make(seed, count, low=32, high=96)``: random maps of random sizes with their GT boxes."""

    def make(seed: int, count: int, low: int = 32, high: int = 96):
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(count):
            height, width = (int(v) for v in rng.integers(low, high + 1, 2))
            score_map = random_map(rng, height, width)
            out.append((score_map, random_gt_boxes(rng, *score_map.shape)))
        return out

    return make
