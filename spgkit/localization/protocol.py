"""The evaluation protocols as objects: each one holds every definition that turns a map at feature
resolution into boxes and pixel scores, so the map pipeline and the evaluator ask the protocol
instead of branching on its name.

Studies, records and the command line name a protocol by a string (:data:`~spgkit.config.PROTOCOLS`
lists the names with their descriptions); :func:`get_protocol` is the one place a name becomes its
object. Both protocols score the evaluator's inclusive pixel boxes with the IoU of
:func:`~spgkit.boxes.box_iou` (+1 in every side's length); :meth:`Protocol.resize_gt_boxes`
is the one place spgkit's boxes become them (:mod:`~spgkit.boxes`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import lru_cache

import numpy as np
import torch

from spgkit.boxes import NO_BOXES, check_boxes, from_inclusive
from spgkit.config import PROTOCOLS
from spgkit.localization.maps import Array, as_float_maps, as_numpy, benchmark_cuts, benchmark_uint8, minmax_normalize, normalize_maps, resize_maps
from spgkit.localization.regions import Regions, ThresholdBoxes, benchmark_regions, check_thresholds, default_regions


class Protocol(ABC):
    """The definitions of one evaluation protocol, from the resize of a map to PxAP.

    Attributes:
        name: the protocol's name in studies, records and the command line.
        batched: whether the batched GPU path (:mod:`~spgkit.localization.torch_eval`) implements
            its definitions.
    """

    name: str
    batched: bool = False

    @property
    def description(self) -> str:
        """What the protocol defines, in one sentence (:data:`~spgkit.config.PROTOCOLS`)."""
        return PROTOCOLS[self.name]

    def __repr__(self) -> str:
        return f"get_protocol({self.name!r})"

    def score_maps(self, maps: Array, size: tuple[int, int]) -> torch.Tensor:
        """(N, h, w) maps at feature resolution as (N, H, W) maps in [0, 1] at ``size = (H, W)``:
        :meth:`resize`, then :meth:`normalize`; a tensor on the maps' device, or on the CPU for
        numpy maps or where the protocol resizes on the CPU (no copy there)."""
        return torch.as_tensor(self.normalize(self.resize(maps, size)))

    @abstractmethod
    def resize(self, maps: Array, size: tuple[int, int]) -> Array:
        """(N, h, w) raw maps resized to ``size = (H, W)``."""

    @abstractmethod
    def normalize(self, maps: Array) -> Array:
        """Resized maps min-max normalised to [0, 1], each on its own."""

    @abstractmethod
    def foreground(self, normalized: np.ndarray, threshold: float) -> np.ndarray:
        """The (N, H, W) bool pixels that ``threshold`` keeps of normalised (N, H, W) maps."""

    @abstractmethod
    def regions(self, normalized: np.ndarray, thresholds: np.ndarray, gt_boxes: np.ndarray | None = None) -> tuple[Regions, np.ndarray]:
        """The regions of one normalised (H, W) map at ascending ``thresholds`` (each box's best IoU
        with ``gt_boxes`` where given), and the index into ``Regions.cuts`` of each threshold."""

    @abstractmethod
    def resize_gt_boxes(self, boxes: np.ndarray, original_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """(n, 4) boxes of an image of ``original_size = (H, W)`` in spgkit's convention
        (:mod:`~spgkit.boxes`), as inclusive pixel corners on the image resized to
        ``size``: spgkit's one conversion into the evaluator's boxes."""

    @abstractmethod
    def pixel_edges(self, thresholds: np.ndarray) -> np.ndarray:
        """Edges of PxAP's score histogram: a score's bin is ``searchsorted(edges, score, "right")``."""

    @abstractmethod
    def pxap(self, positive: np.ndarray, negative: np.ndarray) -> float:
        """PxAP in % from the histograms of object and background scores over :meth:`pixel_edges`'s bins."""


class Benchmark(Protocol):
    """The WSOL benchmark's definitions end to end, bit for bit, quirks included: its uint8 map,
    integer cuts and OpenCV contours (see :func:`~spgkit.localization.regions.benchmark_regions`)."""

    name = "benchmark"

    def resize(self, maps: Array, size: tuple[int, int]) -> np.ndarray:
        """Each map by ``cv2.resize(..., INTER_CUBIC)`` in float32, as the benchmark's
        ``CAMComputer`` does (torch's bicubic differs in the last bits)."""
        import cv2

        maps = as_numpy(maps).astype(np.float32, copy=False)
        height, width = size
        return np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_CUBIC) for m in maps.reshape(-1, *maps.shape[-2:])])

    def normalize(self, maps: np.ndarray) -> np.ndarray:
        """The benchmark's ``normalize_scoremap``: a map with NaN, or with no range, becomes zeros."""
        nan = np.isnan(maps).any(axis=(1, 2))
        if nan.any():
            maps = maps.copy()
            maps[nan] = 0
        return minmax_normalize(maps)

    def foreground(self, normalized: np.ndarray, threshold: float) -> np.ndarray:
        """``uint8 map > int(threshold * max(uint8 map))`` (cv2.THRESH_BINARY on the uint8 map)."""
        levels = benchmark_uint8(normalized)
        cuts = benchmark_cuts(threshold, levels.reshape(len(levels), -1).max(axis=1))
        return levels > cuts[:, None, None]

    def regions(self, normalized: np.ndarray, thresholds: np.ndarray, gt_boxes: np.ndarray | None = None) -> tuple[Regions, np.ndarray]:
        """OpenCV's contours of the uint8 map at the distinct integer cuts of the thresholds."""
        levels = benchmark_uint8(normalized)
        cuts, cut_of = _cut_table(thresholds.tobytes(), int(levels.max()))
        return benchmark_regions(levels, cuts, gt_boxes), cut_of

    def resize_gt_boxes(self, boxes: np.ndarray, original_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """The benchmark's ``resize_bbox`` on its inclusive boxes ``(x0, y0, x1 - 1, y1 - 1)``: each
        corner ``int(c * new / old)``."""
        (old_h, old_w), (new_h, new_w) = original_size, size
        x0, y0, x1, y1 = boxes.T
        corners = (x0 * new_w / old_w, y0 * new_h / old_h, (x1 - 1) * new_w / old_w, (y1 - 1) * new_h / old_h)
        return np.trunc(np.stack(corners, axis=1))

    def pixel_edges(self, thresholds: np.ndarray) -> np.ndarray:
        """np.histogram's bins of the benchmark's ``MaskEvaluator``: ``[t_0, t_1), ..., [t_last, 1),
        [1, 2)``; bin 0 holds the scores below ``t_0``."""
        return np.append(thresholds, 1.0)

    def pxap(self, positive: np.ndarray, negative: np.ndarray) -> float:
        """The benchmark's ``MaskEvaluator``: its histograms end with an empty ``[2, 3]`` bin and
        leave out the scores below ``t_0``; cumulated from the top, every recall step counts where
        some pixel is predicted positive."""
        true_hist, false_hist = np.append(positive[1:], 0.0), np.append(negative[1:], 0.0)
        if true_hist.sum() <= 0:
            raise ValueError("PxAP needs at least one object pixel")
        tp = true_hist[::-1].cumsum()
        fp = false_hist[::-1].cumsum()
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
            recall = tp / true_hist.sum()
        predicted = (tp + fp) != 0
        return float((precision[1:] * np.diff(recall))[predicted[1:]].sum() * 100)


@lru_cache(maxsize=64)
def _cut_table(thresholds: bytes, uint8_max: int) -> tuple[np.ndarray, np.ndarray]:
    # The distinct integer cuts of the thresholds and the cut of each; the uint8 maximum of a
    # normalised map is 255 (or 0 when flat), so this is computed once per threshold list.
    return np.unique(benchmark_cuts(np.frombuffer(thresholds), uint8_max), return_inverse=True)


class Float(Protocol):
    """spgkit's float definitions: foreground ``map >= tau`` on the float map, tight boxes of
    8-connected regions, the largest by pixel count (see
    :func:`~spgkit.localization.regions.default_regions`)."""

    name = "float"
    batched = True

    def resize(self, maps: Array, size: tuple[int, int]) -> Array:
        """Bilinearly (:func:`~spgkit.localization.maps.resize_maps`), on the maps' device."""
        return resize_maps(maps, size)

    def normalize(self, maps: Array) -> Array:
        """Min-max; NaN or infinite values raise ValueError, a map with no range becomes zeros."""
        return minmax_normalize(as_float_maps(maps))

    def foreground(self, normalized: np.ndarray, threshold: float) -> np.ndarray:
        """``map >= threshold``."""
        return normalized >= threshold

    def regions(self, normalized: np.ndarray, thresholds: np.ndarray, gt_boxes: np.ndarray | None = None) -> tuple[Regions, np.ndarray]:
        """The 8-connected components of ``map >= t``; threshold ``j`` is cut ``j``."""
        regions = default_regions(normalized, thresholds, gt_boxes)
        return regions, regions.cuts

    def resize_gt_boxes(self, boxes: np.ndarray, original_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """The corners scaled exactly, ``x1, y1`` then made inclusive by subtracting one pixel."""
        (old_h, old_w), (new_h, new_w) = original_size, size
        x0, y0, x1, y1 = boxes.T
        return np.stack((x0 * new_w / old_w, y0 * new_h / old_h, x1 * new_w / old_w - 1, y1 * new_h / old_h - 1), axis=1)

    def pixel_edges(self, thresholds: np.ndarray) -> np.ndarray:
        """The thresholds: bin ``j + 1`` holds the scores in ``[t_j, t_j+1)``, bin 0 those below ``t_0``."""
        return thresholds

    def pxap(self, positive: np.ndarray, negative: np.ndarray) -> float:
        """The foreground of ``t_j`` is the scores ``>= t_j``; every recall step counts."""
        if positive.sum() <= 0:
            raise ValueError("PxAP needs at least one object pixel")
        tp = positive[::-1].cumsum()[::-1][1:]
        fp = negative[::-1].cumsum()[::-1][1:]
        recall = tp / positive.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        step = recall - np.append(recall[1:], 0.0)  # recall gained going down from t_j+1 to t_j
        return float((precision * step).sum() * 100)


_BY_NAME = {p.name: p for p in (Benchmark(), Float())}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; ValueError naming the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown evaluation protocol {name!r}; use one of {sorted(_BY_NAME)}") from None


def score_maps(maps: Array, size: tuple[int, int], protocol: str = "benchmark") -> torch.Tensor:
    """Localization maps at feature resolution, (N, h, w), as maps in [0, 1] at ``size = (H, W)``,
    made as ``protocol`` defines (:meth:`Protocol.score_maps`): ``"benchmark"``, the WSOL
    benchmark's ``CAMComputer`` step for step (cv2 ``INTER_CUBIC`` in float32, then min-max
    normalised, a map with NaN or no range becoming zeros), a CPU tensor; ``"float"``, resized
    bilinearly then min-max normalised, a tensor on the maps' device (a CUDA tensor stays there)."""
    return get_protocol(protocol).score_maps(maps, size)


def resize_gt_boxes(boxes, original_size: tuple[int, int], size: tuple[int, int], protocol: str = "benchmark") -> np.ndarray:
    """Ground-truth boxes of an image of ``original_size = (H, W)``, in spgkit's convention
    (:mod:`~spgkit.boxes`; checked there, :class:`~spgkit.boxes.BoxError`
    otherwise), as inclusive pixel corners on the image resized to ``size``.

    ``"benchmark"``: the WSOL benchmark's ``resize_bbox`` on its inclusive boxes
    ``(x0, y0, x1 - 1, y1 - 1)``: each corner ``int(c * new / old)``. ``"float"``: the corners
    scaled exactly, ``x1, y1`` then made inclusive by subtracting one pixel.
    """
    boxes = check_boxes(np.asarray(as_numpy(boxes), dtype=np.float64).reshape(-1, 4), tuple(original_size))
    return get_protocol(protocol).resize_gt_boxes(boxes, original_size, size)


def threshold_boxes(score_map, thresholds=None, *, protocol: str = "benchmark") -> ThresholdBoxes:
    """Boxes of the regions of one map at every threshold, from a single component tree.

    Args:
        score_map: (H, W) map, numpy or torch; it is min-max normalised first (a constant map
            becomes all zeros). NaN or infinite values raise ValueError.
        thresholds: ascending values in [0, 1]; default ``np.arange(0, 1, 0.01)``.
        protocol: ``"benchmark"`` for the WSOL benchmark's OpenCV definitions, bit for bit (see
            :func:`~spgkit.localization.regions.benchmark_regions`); ``"float"`` for foreground ``map >= tau`` on the float map,
            8-connected regions, tight boxes, largest by pixel count, ties to the region met first
            in raster order (:meth:`Protocol.regions`).
    """
    definitions = get_protocol(protocol)
    thresholds = check_thresholds(thresholds)
    normalized = normalize_maps(as_float_maps(as_numpy(score_map), "score_map"))[0]
    regions, cut_of = definitions.regions(normalized, thresholds)
    winner = regions.largest[cut_of]
    has_largest = winner >= 0
    largest = np.zeros((len(thresholds), 4), dtype=np.int64)
    largest[has_largest] = regions.boxes[winner[has_largest]]
    order = np.lexsort((*regions.boxes.T[::-1], regions.box_cut))
    per_cut = np.bincount(regions.box_cut, minlength=len(regions.cuts))
    starts = np.concatenate([[0], np.cumsum(per_cut)])
    boxes = regions.boxes[order]
    pieces = [boxes[starts[c] : starts[c + 1]] for c in cut_of.tolist()]
    offsets = np.concatenate([[0], np.cumsum([len(piece) for piece in pieces])]).astype(np.int64)
    all_boxes = np.concatenate(pieces) if pieces else np.zeros((0, 4), dtype=np.int64)
    return ThresholdBoxes(thresholds, largest, has_largest, all_boxes, offsets)


def largest_region_box(score_map, threshold: float, *, protocol: str = "benchmark") -> np.ndarray:
    """The box of the largest region of ``score_map`` at ``threshold``, in spgkit's convention
    (:mod:`~spgkit.boxes`): (1, 4) float64 ``x0, y0, x1, y1`` with ``x1, y1``
    excluded, or :data:`~spgkit.boxes.NO_BOXES` when no pixel reaches the threshold
    (float protocol only; the benchmark then scores its box ``(0, 0, 0, 0)``, which comes back
    as ``[[0, 0, 1, 1]]``). The map is min-max normalised first; see :func:`threshold_boxes`,
    which gives the evaluator's inclusive corners."""
    boxes = threshold_boxes(score_map, [threshold], protocol=protocol)
    return from_inclusive(boxes.largest[:1]) if boxes.has_largest[0] else NO_BOXES
