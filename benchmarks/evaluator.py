"""Time spgkit's localization evaluator, both protocols, against the WSOL benchmark's OpenCV procedure.

By default the maps are shaped like real CAMs: a coarse grid (28x28) holding 1-4 Gaussian blobs plus
uniform noise, resized to the image size with cv2's bicubic kernel and min-max normalised (the
benchmark's own CAM pipeline), which gives many small extrema, holes and islands. ``--maps blobs``
gives sums of smooth Gaussian blobs at full resolution instead. Ground-truth boxes surround the
strongest blobs. Everything runs on one CPU thread, and the script exits if any result differs:

    python benchmarks/evaluator.py --images 150 --thresholds 100 1000

Columns, in ms per image (the median over images of the fastest of ``--repeat`` runs):

- benchmark: the benchmark's procedure (spgkit.localization.readable), one evaluator per metric
  (MaxBoxAcc, MaxBoxAccV2), each calling cv2.findContours once per threshold;
- 1-pass: both metrics from one findContours call per threshold, a leaner use of OpenCV;
- spgkit benchmark / spgkit float: LocalizationEvaluator(protocol=...), both metrics, one update per
  image; the benchmark protocol must give the benchmark's numbers, the float protocol those of a
  per-threshold labelling (cv2.connectedComponentsWithStats, untimed);
- readable benchmark / readable float: the same evaluators on the readable path that spgkit takes
  without its compiled core (spgkit.localization.tree.without_core), which must count the same.
  The second table gives both paths' times and how many times slower the readable one is.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch load their thread pools

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spgkit.localization import LocalizationEvaluator, score_maps  # noqa: E402
from spgkit.localization import readable as ref  # noqa: E402
from spgkit.localization.tree import without_core  # noqa: E402

DELTAS = (30, 50, 70)


def _blob_boxes(rng, blobs, scale: float, offset: float, size: int) -> np.ndarray:
    """1-2 GT boxes around the strongest of ``blobs`` (weight, cx, cy, sigma), mapped to pixels."""
    gt = []
    for _, cx, cy, sigma in sorted(blobs, reverse=True)[: rng.integers(1, 3)]:
        half = sigma * scale * rng.uniform(1.0, 2.5)
        x, y = cx * scale + offset, cy * scale + offset
        gt.append(np.clip([x - half, y - half, x + half, y + half], 0, size - 1).round())
    return np.asarray(gt)


def _add_blobs(rng, m: np.ndarray, count: int, sigmas: tuple[float, float], weights: tuple[float, float]) -> list:
    """Add ``count`` Gaussian blobs to the square map ``m`` in place: centres uniform over the map,
    widths ``sigmas`` and peaks ``weights`` (ranges, widths as shares of the side); returns each
    blob's (weight, cx, cy, sigma)."""
    side = m.shape[0]
    yy, xx = np.mgrid[0:side, 0:side]
    blobs = []
    for _ in range(count):
        cx, cy = rng.uniform(0, side, 2)
        sigma = rng.uniform(*sigmas) * side
        weight = rng.uniform(*weights)
        m += weight * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
        blobs.append((weight, cx, cy, sigma))
    return blobs


def cam_maps(count: int, size: int, grid: int, noise: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """CAM-shaped float32 maps: ``grid`` x ``grid`` maps of 1-4 Gaussian blobs plus uniform noise in
    ``[0, noise)``, resized to ``size`` x ``size`` by cv2 bicubic and min-max normalised."""
    rng = np.random.default_rng(seed)
    coarse, boxes = [], []
    for _ in range(count):
        m = rng.uniform(0, noise, (grid, grid))
        blobs = _add_blobs(rng, m, rng.integers(1, 5), (0.05, 0.2), (0.3, 1.0))
        coarse.append(m.astype(np.float32))
        # cv2.resize maps the centre of coarse cell i to pixel (i + 0.5) * scale - 0.5.
        scale = size / grid
        boxes.append(_blob_boxes(rng, blobs, scale, 0.5 * scale - 0.5, size))
    return list(score_maps(np.stack(coarse), (size, size), "benchmark").numpy()), boxes


def blob_maps(count: int, size: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Float32 maps of 1-5 smooth Gaussian blobs at full resolution."""
    rng = np.random.default_rng(seed)
    maps, boxes = [], []
    for _ in range(count):
        m = np.zeros((size, size))
        blobs = _add_blobs(rng, m, rng.integers(1, 6), (0.05, 0.25), (0.2, 1.0))
        maps.append(m.astype(np.float32))
        boxes.append(_blob_boxes(rng, blobs, 1.0, 0.0, size))
    return maps, boxes


def labelled_hits(normalized: np.ndarray, gt: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float protocol by labelling each thresholded map: per threshold, whether the largest
    region's box (most pixels, ties to the first in raster order) has IoU >= 0.5, and whether the
    best region box reaches each of ``DELTAS``."""
    largest_hit = np.zeros(len(thresholds), dtype=bool)
    best_hit = np.zeros((len(DELTAS), len(thresholds)), dtype=bool)
    for j, tau in enumerate(thresholds):
        count, labels, stats, _ = cv2.connectedComponentsWithStats((normalized >= tau).astype(np.uint8), connectivity=8)
        if count == 1:
            continue
        x, y, w, h, sizes = stats[1:].T
        boxes = np.stack([x, y, x + w - 1, y + h - 1], axis=1)
        tied = np.flatnonzero(sizes == sizes.max())
        flat = labels.ravel()
        winner = min(tied, key=lambda k: int(np.argmax(flat == k + 1))) if len(tied) > 1 else tied[0]
        iou = ref.calculate_multiple_iou(boxes, gt).max(1)
        largest_hit[j] = iou[winner] >= 0.5
        best_hit[:, j] = [iou.max() >= d / 100 for d in DELTAS]
    return largest_hit, best_hit


class Runs:
    """One set of accumulators: spgkit's evaluator in both protocols on both paths, the benchmark's
    two evaluators, and the hit counts of the single-pass variant and of the labelling check."""

    def __init__(self, thresholds: np.ndarray):
        self.thresholds = thresholds
        self.ours_benchmark = LocalizationEvaluator(thresholds=thresholds, protocol="benchmark", backend="numpy")
        self.ours_float = LocalizationEvaluator(thresholds=thresholds, protocol="float", backend="numpy")
        self.readable_benchmark_eval = LocalizationEvaluator(thresholds=thresholds, protocol="benchmark", backend="numpy")
        self.readable_float_eval = LocalizationEvaluator(thresholds=thresholds, protocol="float", backend="numpy")
        self.v1 = ref.BoxEvaluator(thresholds, iou_thresholds=(50,), multi_contour_eval=False)
        self.v2 = ref.BoxEvaluator(thresholds, iou_thresholds=DELTAS, multi_contour_eval=True)
        self.single_largest = np.zeros(len(thresholds))
        self.single_best = np.zeros((len(DELTAS), len(thresholds)))
        self.label_largest = np.zeros(len(thresholds))
        self.label_best = np.zeros((len(DELTAS), len(thresholds)))

    def spgkit_benchmark(self, m: np.ndarray, gt: np.ndarray) -> None:
        self.ours_benchmark.update(m[None], [gt])

    def spgkit_float(self, m: np.ndarray, gt: np.ndarray) -> None:
        self.ours_float.update(m[None], [gt])

    def readable_benchmark(self, m: np.ndarray, gt: np.ndarray) -> None:
        with without_core():
            self.readable_benchmark_eval.update(m[None], [gt])

    def readable_float(self, m: np.ndarray, gt: np.ndarray) -> None:
        with without_core():
            self.readable_float_eval.update(m[None], [gt])

    def benchmark(self, m: np.ndarray, gt: np.ndarray) -> None:
        normalized = ref.normalize_scoremap(m)
        self.v1.accumulate(normalized, gt)
        self.v2.accumulate(normalized, gt)

    def single_pass(self, m: np.ndarray, gt: np.ndarray) -> None:
        """Both metrics from one findContours call per threshold (a leaner OpenCV variant)."""
        found = ref.contours_at_thresholds(ref.normalize_scoremap(m), self.thresholds)
        largest = np.asarray([largest for largest, _ in found])
        self.single_largest += ref.calculate_multiple_iou(largest, gt).max(1) >= 0.5
        counts = [len(boxes) for _, boxes in found]
        per_box = ref.calculate_multiple_iou(np.concatenate([boxes for _, boxes in found]), gt).max(1)
        best = np.maximum.reduceat(per_box, np.concatenate([[0], np.cumsum(counts)[:-1]]))
        for k, delta in enumerate(DELTAS):
            self.single_best[k] += best >= delta / 100

    def label(self, m: np.ndarray, gt: np.ndarray) -> None:
        largest, best = labelled_hits(ref.normalize_scoremap(m), gt, self.thresholds)
        self.label_largest += largest
        self.label_best += best

    def check(self) -> dict[str, float]:
        """Exits unless spgkit's counts and metrics equal the references'; returns the metrics."""
        got = self.ours_benchmark.compute()
        expected = {"maxboxacc": self.v1.compute()[50]}
        expected.update({f"maxboxaccv2_iou{d}": self.v2.compute()[d] for d in DELTAS})
        same = all((got[key], got[f"{key}_threshold"]) == value for key, value in expected.items())
        state = self.ours_benchmark.state_dict()
        same &= np.array_equal(self.single_largest, state["largest_correct"])
        same &= np.array_equal(self.single_best, state["box_correct"])
        state = self.ours_float.state_dict()
        same &= np.array_equal(self.label_largest, state["largest_correct"])
        same &= np.array_equal(self.label_best, state["box_correct"])
        for compiled, readable in ((self.ours_benchmark, self.readable_benchmark_eval), (self.ours_float, self.readable_float_eval)):
            same &= all(np.array_equal(v, readable.state_dict()[k]) for k, v in compiled.state_dict().items())
        if not same:
            raise SystemExit(f"results differ at {len(self.thresholds)} thresholds")
        floating = self.ours_float.compute()
        return {"benchmark": got["maxboxaccv2"], "float": floating["maxboxaccv2"]}


def fastest(repeat: int, kept, spare) -> float:
    """Seconds of the fastest of ``repeat`` runs (other processes only ever add time): ``kept()``
    once, whose results count, then ``spare()``, which accumulates into throw-away state."""
    best = float("inf")
    for k in range(repeat):
        begin = time.perf_counter()
        (kept if k == 0 else spare)()
        best = min(best, time.perf_counter() - begin)
    return best


TIMED = ("benchmark", "single_pass", "spgkit_benchmark", "spgkit_float", "readable_benchmark", "readable_float")


def run(maps, boxes, steps: int, repeat: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms per image of each timed procedure, and the MaxBoxAccV2 of both protocols."""
    thresholds = np.arange(0, 1, 1.0 / steps)
    kept, spare = Runs(thresholds), Runs(thresholds)
    times = {name: [] for name in TIMED}
    for m, gt in zip(maps, boxes, strict=True):
        # Interleaved image by image, so that load on the machine affects all alike.
        for name in TIMED:
            times[name].append(fastest(repeat, partial(getattr(kept, name), m, gt), partial(getattr(spare, name), m, gt)))
        kept.label(m, gt)
    metrics = kept.check()
    return {name: float(np.median(value)) * 1000 for name, value in times.items()}, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", choices=("cam", "blobs"), default="cam", help="CAM-shaped maps or smooth blobs")
    parser.add_argument("--images", type=int, default=150, help="number of random maps")
    parser.add_argument("--size", type=int, default=224, help="map side in pixels")
    parser.add_argument("--grid", type=int, default=28, help="side of the coarse CAM grid (--maps cam)")
    parser.add_argument("--noise", type=float, default=0.2, help="uniform noise amplitude on the CAM grid (blob peaks 0.3-1)")
    parser.add_argument("--thresholds", type=int, nargs="+", default=[100, 1000], help="numbers of thresholds")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if args.maps == "cam":
        maps, boxes = cam_maps(args.images, args.size, args.grid, args.noise, args.seed)
        what = f"CAM-shaped maps ({args.grid}x{args.grid} grid, 1-4 blobs, noise {args.noise:g}, cv2 bicubic)"
    else:
        maps, boxes = blob_maps(args.images, args.size, args.seed)
        what = "maps of smooth Gaussian blobs"
    run(maps[:2], boxes[:2], 10, 1)  # warm-up (imports, caches)
    print(f"{args.images} {what} of {args.size}x{args.size}, one thread")
    print(f"ms per image: median over images of the fastest of {args.repeat} runs; ratio: benchmark / spgkit")
    header = ("thresholds", "benchmark", "1-pass", "spgkit bench", "ratio", "spgkit float", "ratio", "identical")
    print(" ".join(f"{c:>12}" for c in header), "  MaxBoxAccV2 bench / float")
    cost = []
    for steps in args.thresholds:
        t, metrics = run(maps, boxes, steps, args.repeat)  # exits if any result differs
        cells = (
            f"{steps}",
            f"{t['benchmark']:.2f}",
            f"{t['single_pass']:.2f}",
            f"{t['spgkit_benchmark']:.3f}",
            f"{t['benchmark'] / t['spgkit_benchmark']:.1f}x",
            f"{t['spgkit_float']:.3f}",
            f"{t['benchmark'] / t['spgkit_float']:.1f}x",
            "yes",
        )
        print(" ".join(f"{c:>12}" for c in cells), f"  {metrics['benchmark']:11.2f} / {metrics['float']:.2f}")
        cost.append((steps, t))
    print_readable_cost(cost)


def print_readable_cost(cost: list[tuple[int, dict[str, float]]]) -> None:
    """The second table: per number of thresholds, both paths' ms per image and their ratio."""
    print("\nWithout the compiled core (the readable path, same counts), ms per image; slower: readable / compiled")
    header = ("thresholds", "compiled", "readable", "slower", "compiled", "readable", "slower")
    print(" ".join(f"{c:>12}" for c in header), "   (benchmark protocol, then float)")
    for steps, t in cost:
        cells = [f"{steps}"]
        for protocol in ("benchmark", "float"):
            compiled, readable = t[f"spgkit_{protocol}"], t[f"readable_{protocol}"]
            cells += [f"{compiled:.3f}", f"{readable:.2f}", f"{readable / compiled:.0f}x"]
        print(" ".join(f"{c:>12}" for c in cells))


if __name__ == "__main__":
    main()
