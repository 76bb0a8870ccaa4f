"""Streaming WSOL metrics: GT-known / Top-1 / Top-5 Loc, MaxBoxAcc, MaxBoxAccV2 and PxAP.

:class:`LocalizationEvaluator` keeps only per-threshold counts and score histograms, so its memory
does not grow with the number of images, and every piece of its state is a sum: ranks of a
distributed run can all-reduce :meth:`~LocalizationEvaluator.state_dict` and load the result.

Definitions (Choe et al., CVPR 2020, "Evaluating weakly supervised object localization methods
right", and its public evaluation code, "the WSOL benchmark"):

- IoU uses inclusive pixel boxes: area = (x1 - x0 + 1) * (y1 - y0 + 1); an image's IoU is the best
  over its ground-truth boxes.
- MaxBoxAcc: the best over thresholds of the share of images whose largest-region box has
  IoU >= 50%. MaxBoxAccV2(delta): the same with the best box over *all* regions, for delta in
  ``iou_thresholds``; MaxBoxAccV2 is their mean.
- GT-known Loc: the largest-region box at ``cam_threshold`` has IoU >= 50%. Top-1 / Top-5 Loc: and
  the class is in the top 1 / top 5.
- PxAP: the area under the pixel precision-recall curve of the map against the object masks,
  pixels in ignore regions left out: sum over thresholds of precision x (recall step), in %.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from spgkit.boxes import MISSING
from spgkit.localization.maps import as_float_maps, as_numpy, minmax_normalize
from spgkit.localization.protocol import get_protocol
from spgkit.localization.regions import Regions, check_thresholds

_STATE = (
    "num_images",
    "largest_correct",
    "box_correct",
    "gt_known_correct",
    "top1_images",
    "top1_correct",
    "top5_images",
    "top5_correct",
    "mask_images",
    "pixel_positive",
    "pixel_negative",
)


def _iou_key(delta: float) -> str:
    return f"iou{delta:g}"


class LocalizationEvaluator:
    """Accumulate localization metrics batch by batch; :meth:`compute` returns them in %.

    Args:
        thresholds: ascending map thresholds in [0, 1] for MaxBoxAcc, MaxBoxAccV2 and PxAP; default
            ``np.arange(0, 1, 0.01)`` (the benchmark's reporting grid; it uses 0.001 steps during
            training).
        iou_thresholds: IoU levels (%) of MaxBoxAccV2; its headline value is their mean.
        cam_threshold: the threshold of GT-known, Top-1 and Top-5 Loc.
        protocol: ``"benchmark"`` (default): the WSOL benchmark's exact definitions, quirks
            included: the map becomes ``(map * 255).astype(uint8)``, thresholds become
            ``int(tau * max)`` with foreground ``> cut``, OpenCV contours (holes included) with
            boxes one pixel wider than the region and the largest by polygon area, the box
            ``[0, 0, 0, 0]`` when nothing is left, and the benchmark's PxAP (histogram bins up to
            ``[1, 2)``, scores below the first threshold left out). ``"float"``: the foreground of
            ``tau`` is ``map >= tau`` on the float map, regions are 8-connected components with
            tight boxes, the largest has the most pixels. The definitions are the
            :class:`~spgkit.localization.protocol.Protocol` of that name, which :attr:`protocol`
            holds; it also makes the maps before this (:meth:`~spgkit.localization.protocol.Protocol.score_maps`).
        backend: ``"numpy"`` (one component tree per image on the CPU), ``"torch"`` (batched label
            propagation on the maps' device, float protocol only) or ``"auto"``: torch for CUDA
            tensors in the float protocol, numpy otherwise. Both give identical counts.
        keep_images: also keep what each image scored, for :meth:`images` (off by default: the
            counts alone are enough for the metrics, and their memory does not grow).

    Example::

        ev = LocalizationEvaluator()
        for maps, boxes in batches:        # maps (N, H, W) raw scores at image resolution
            ev.update(maps, boxes)         # boxes: N arrays (n_i, 4) of inclusive x0, y0, x1, y1
        metrics = ev.compute()             # {"maxboxaccv2": ..., "gt_known_loc": ..., ...}
    """

    def __init__(
        self,
        thresholds: Sequence[float] | np.ndarray | None = None,
        iou_thresholds: Sequence[float] = (30, 50, 70),
        cam_threshold: float = 0.2,
        protocol: str = "benchmark",
        backend: str = "auto",
        keep_images: bool = False,
    ) -> None:
        self.thresholds = check_thresholds(thresholds)
        self.iou_thresholds = tuple(float(d) for d in iou_thresholds)
        if not self.iou_thresholds or any(not 0 < d <= 100 for d in self.iou_thresholds):
            raise ValueError(f"iou_thresholds must be non-empty percentages in (0, 100], not {iou_thresholds}")
        if len({_iou_key(d) for d in self.iou_thresholds}) != len(self.iou_thresholds):
            raise ValueError(f"iou_thresholds must be distinct, not {iou_thresholds}")
        self.cam_threshold = float(cam_threshold)
        if not 0 <= self.cam_threshold <= 1:
            raise ValueError(f"cam_threshold must lie in [0, 1], not {cam_threshold}")
        if backend not in ("auto", "numpy", "torch"):
            raise ValueError(f"backend must be 'auto', 'numpy' or 'torch', not {backend!r}")
        self.protocol = get_protocol(protocol)
        if backend == "torch" and not self.protocol.batched:
            raise ValueError("the torch backend implements the float protocol only; use protocol='float'")
        self.backend = backend
        self.keep_images = keep_images
        # Regions are computed at the report thresholds plus the CAM threshold.
        self._all_thresholds = np.union1d(self.thresholds, [self.cam_threshold])
        self._report = np.searchsorted(self._all_thresholds, self.thresholds)
        self._cam = int(np.searchsorted(self._all_thresholds, self.cam_threshold))
        self._pixel_edges = self.protocol.pixel_edges(self.thresholds)
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._images: list[dict[str, np.ndarray]] = []
        t = len(self.thresholds)
        bins = len(self._pixel_edges) + 1
        self._state = {
            "num_images": np.zeros((), dtype=np.int64),
            "largest_correct": np.zeros(t, dtype=np.int64),
            "box_correct": np.zeros((len(self.iou_thresholds), t), dtype=np.int64),
            "gt_known_correct": np.zeros((), dtype=np.int64),
            "top1_images": np.zeros((), dtype=np.int64),
            "top1_correct": np.zeros((), dtype=np.int64),
            "top5_images": np.zeros((), dtype=np.int64),
            "top5_correct": np.zeros((), dtype=np.int64),
            "mask_images": np.zeros((), dtype=np.int64),
            "pixel_positive": np.zeros(bins, dtype=np.int64),
            "pixel_negative": np.zeros(bins, dtype=np.int64),
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """The counts (int64 arrays). Every entry is a sum over images, so summing the state
        dicts of several evaluators (e.g. an all-reduce across ranks) merges them. The images kept
        for :meth:`images` are not part of it: they stay this evaluator's own."""
        return {k: v.copy() for k, v in self._state.items()}

    def load_state_dict(self, state: dict) -> None:
        """Replace the counts with ``state`` (from :meth:`state_dict`, possibly summed across
        evaluators of the same configuration)."""
        new = {}
        for key in _STATE:
            if key not in state:
                raise ValueError(f"state is missing {key!r}")
            value = state[key]
            value = as_numpy(value)
            if value.shape != self._state[key].shape:
                raise ValueError(
                    f"state[{key!r}] has shape {value.shape}, expected {self._state[key].shape}: "
                    "was it made with other thresholds or IoU levels?"
                )
            new[key] = value.astype(np.int64)
        extra = set(state) - set(_STATE)
        if extra:
            raise ValueError(f"unknown state entries {sorted(extra)}")
        self._state = new

    def merge(self, other: LocalizationEvaluator) -> None:
        """Add the counts of ``other``, an evaluator with the same configuration."""
        same = (
            np.array_equal(self.thresholds, other.thresholds)
            and self.iou_thresholds == other.iou_thresholds
            and self.cam_threshold == other.cam_threshold
            and self.protocol == other.protocol
        )
        if not same:
            raise ValueError("can only merge evaluators with the same thresholds, IoU levels, CAM threshold and protocol")
        for key, value in other._state.items():
            self._state[key] = self._state[key] + value
        self._images += other._images

    # ------------------------------------------------------------------ accumulation

    def update(self, maps, gt_boxes, top1_correct=None, top5_correct=None, masks=None, ignore=None) -> None:
        """Add a batch of images.

        Args:
            maps: (N, H, W) float tensor or array of raw scores at image resolution (each map is
                min-max normalised here; resize beforehand with :func:`resize_maps`).
            gt_boxes: N arrays or tensors (n_i, 4) of ground-truth boxes, inclusive pixel corners
                ``x0, y0, x1, y1``, n_i >= 1.
            top1_correct, top5_correct: optional (N,) bools, whether the class is in the top 1 / 5;
                give them for every batch or for none.
            masks: optional (N, H, W) bool object masks; enables PxAP.
            ignore: optional (N, H, W) bool ignore regions (needs ``masks``); object pixels are
                never ignored.

        Raises ValueError, naming the image index in the batch, for NaN/inf maps, empty or
        malformed box lists and shape mismatches.
        """
        maps = as_float_maps(maps)
        n, height, width = maps.shape
        boxes = _check_boxes(gt_boxes, n)
        flags = {
            "top1_correct": _check_flags(top1_correct, n, "top1_correct"),
            "top5_correct": _check_flags(top5_correct, n, "top5_correct"),
        }
        masks, ignore = _check_masks(masks, ignore, (n, height, width))
        if self._use_torch(maps):
            largest_iou, best_iou, cam_box = self._torch_images(maps, boxes, masks, ignore)
        else:
            largest_iou, best_iou, cam_box = self._numpy_images(as_numpy(maps), boxes, masks, ignore)
        self._count_boxes(largest_iou, best_iou, flags)
        if self.keep_images:
            report, cam = self._report, self._cam
            self._images.append({"largest_iou": largest_iou[:, report], "best_iou": best_iou[:, report], "cam_iou": largest_iou[:, cam], "cam_box": cam_box})

    def _torch_images(self, maps, boxes: list[np.ndarray], masks, ignore) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`_numpy_images` for maps on an accelerator, in one batched pass: the (N, T')
        IoUs of the largest and the best region's box at every threshold, and with
        ``keep_images`` the box at the CAM threshold (None without); pixels counted with masks."""
        from spgkit.localization.torch_eval import batched_region_ious

        normalized = minmax_normalize(torch.as_tensor(maps))
        largest_iou, best_iou = batched_region_ious(normalized, boxes, self._all_thresholds)
        if masks is not None or self.keep_images:
            normalized = normalized.cpu().numpy()
        if masks is not None:
            self._count_pixels(normalized, masks, ignore)
        if not self.keep_images:
            return largest_iou, best_iou, None
        # The batched pass gives IoUs only: the box comes from the numpy path's float regions of
        # the same map, which label alike (tests/localization/test_loc_torch.py).
        cam = np.array([self.cam_threshold])
        return largest_iou, best_iou, np.stack([_largest_box(*self.protocol.regions(m, cam), 0) for m in normalized])

    def _use_torch(self, maps) -> bool:
        if self.backend == "torch":
            return True
        return self.backend == "auto" and self.protocol.batched and isinstance(maps, torch.Tensor) and maps.is_cuda

    def _numpy_images(self, maps: np.ndarray, boxes: list[np.ndarray], masks, ignore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, T') IoUs of the largest region's box and of the best box at every threshold, and
        the (N, 4) largest region's box at the CAM threshold; also counts PxAP pixels. One image
        at a time keeps temporaries small, which matters for speed."""
        n = len(maps)
        largest_iou = np.zeros((n, len(self._all_thresholds)))
        best_iou = np.zeros((n, len(self._all_thresholds)))
        cam_box = np.zeros((n, 4), dtype=np.int64)
        for i in range(n):
            normalized = minmax_normalize(maps[i : i + 1])
            regions, cut_of = self.protocol.regions(normalized[0], self._all_thresholds, boxes[i])
            iou = regions.iou
            best = np.zeros(len(regions.cuts))
            np.maximum.at(best, regions.box_cut, iou)
            largest = np.zeros(len(regions.cuts))
            has = regions.largest >= 0
            largest[has] = iou[regions.largest[has]]
            largest_iou[i], best_iou[i] = largest[cut_of], best[cut_of]
            cam_box[i] = _largest_box(regions, cut_of, self._cam)
            if masks is not None:
                self._count_pixels(normalized, masks[i : i + 1], None if ignore is None else ignore[i : i + 1])
        return largest_iou, best_iou, cam_box

    def _count_boxes(self, largest_iou: np.ndarray, best_iou: np.ndarray, flags: dict) -> None:
        state = self._state
        report = self._report
        # The benchmark compares IoU >= delta / 100; the same expression keeps ties identical.
        state["largest_correct"] += (largest_iou[:, report] >= 50 / 100).sum(0)
        for k, delta in enumerate(self.iou_thresholds):
            state["box_correct"][k] += (best_iou[:, report] >= delta / 100).sum(0)
        known = largest_iou[:, self._cam] >= 50 / 100
        state["gt_known_correct"] += known.sum()
        state["num_images"] += len(known)
        for top in ("top1", "top5"):
            given = flags[f"{top}_correct"]
            if given is not None:
                state[f"{top}_images"] += len(given)
                state[f"{top}_correct"] += (known & given).sum()

    def _count_pixels(self, normalized: np.ndarray, masks: np.ndarray, ignore: np.ndarray | None) -> None:
        size = len(self._state["pixel_positive"])
        bins = np.searchsorted(self._pixel_edges, normalized, side="right")
        negative = ~masks if ignore is None else ~masks & ~ignore
        self._state["pixel_positive"] += np.bincount(bins[masks], minlength=size)
        self._state["pixel_negative"] += np.bincount(bins[negative], minlength=size)
        self._state["mask_images"] += len(masks)

    # ------------------------------------------------------------------ results

    def images(self) -> dict[str, np.ndarray]:
        """What each image scored, in the order :meth:`update` saw them (needs ``keep_images``):
        ``largest_iou`` and ``best_iou`` (N, T) float64, the IoU of the largest region's box and
        the best IoU of any region's box at each of :attr:`thresholds`; ``cam_iou`` (N,) and
        ``cam_box`` (N, 4) int64, the largest region's IoU and inclusive box at ``cam_threshold``
        (a row of :data:`~spgkit.boxes.MISSING` where no pixel reaches it, which only
        the float protocol allows; :func:`~spgkit.boxes.table_boxes` gives them as
        spgkit's boxes). Every box metric
        follows from these (Top-1 and Top-5 Loc with the class flags): e.g. MaxBoxAccV2 at IoU 50
        is the best over thresholds of the share of ``best_iou >= 0.5``."""
        if not self.keep_images:
            raise ValueError("this evaluator keeps no images: make it with keep_images=True")
        if not self._images:
            raise ValueError("no images: call update() before images()")
        return {k: np.concatenate([batch[k] for batch in self._images]) for k in self._images[0]}

    def compute(self) -> dict[str, float]:
        """Metrics so far, in % (plain floats), with the threshold that achieves each maximum.

        Keys: ``num_images``; ``gt_known_loc`` (and ``top1_loc`` / ``top5_loc`` when their flags
        were given); ``maxboxacc`` and ``maxboxacc_threshold``; ``maxboxaccv2`` (the mean over IoU
        levels) and, per level, ``maxboxaccv2_iou30`` and ``maxboxaccv2_iou30_threshold`` etc.;
        ``pxap`` when masks were given. The best threshold is the first one reaching the maximum.
        """
        state = self._state
        n = int(state["num_images"])
        if n == 0:
            raise ValueError("no images: call update() before compute()")
        out: dict[str, float] = {"num_images": float(n)}
        out["gt_known_loc"] = float(state["gt_known_correct"]) * 100.0 / n
        for top in ("top1", "top5"):
            given = int(state[f"{top}_images"])
            if given and given != n:
                raise ValueError(f"{top}_correct was given for {given} of {n} images; give it for all or none")
            if given:
                out[f"{top}_loc"] = float(state[f"{top}_correct"]) * 100.0 / n
        accuracy = state["largest_correct"] * 100.0 / float(n)
        out["maxboxacc"] = float(accuracy.max())
        out["maxboxacc_threshold"] = float(self.thresholds[int(np.argmax(accuracy))])
        maxima = []
        for k, delta in enumerate(self.iou_thresholds):
            accuracy = state["box_correct"][k] * 100.0 / float(n)
            maxima.append(accuracy.max())
            out[f"maxboxaccv2_{_iou_key(delta)}"] = float(accuracy.max())
            out[f"maxboxaccv2_{_iou_key(delta)}_threshold"] = float(self.thresholds[int(np.argmax(accuracy))])
        out["maxboxaccv2"] = float(np.mean(maxima))
        if int(state["mask_images"]):
            out["pxap"] = self.protocol.pxap(state["pixel_positive"].astype(np.float64), state["pixel_negative"].astype(np.float64))
        return out

def _largest_box(regions: Regions, cut_of: np.ndarray, index: int) -> np.ndarray:
    """The box of the largest region at threshold ``index`` (``cut_of`` from
    :meth:`Protocol.regions <spgkit.localization.protocol.Protocol.regions>`), or a row of ``MISSING`` where there is none."""
    winner = regions.largest[cut_of[index]]
    return regions.boxes[winner] if winner >= 0 else np.full(4, MISSING)


def _check_boxes(gt_boxes, n: int) -> list[np.ndarray]:
    if len(gt_boxes) != n:
        raise ValueError(f"gt_boxes has {len(gt_boxes)} entries for {n} maps")
    out = []
    for i, boxes in enumerate(gt_boxes):
        boxes = np.asarray(as_numpy(boxes), dtype=np.float64)
        if boxes.size == 0:
            raise ValueError(f"gt_boxes[{i}] is empty: every image needs at least one box")
        if boxes.ndim == 1 and boxes.shape[0] == 4:
            boxes = boxes[None]
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"gt_boxes[{i}] must have shape (n, 4), not {boxes.shape}")
        if not np.all(np.isfinite(boxes)):
            raise ValueError(f"gt_boxes[{i}] contains NaN or infinite values")
        out.append(boxes)
    return out


def _check_flags(flags, n: int, name: str) -> np.ndarray | None:
    if flags is None:
        return None
    flags = as_numpy(flags)
    if flags.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), not {flags.shape}")
    return flags.astype(bool)


def _check_masks(masks, ignore, shape: tuple[int, int, int]):
    if masks is None:
        if ignore is not None:
            raise ValueError("ignore regions need masks")
        return None, None
    masks = as_numpy(masks)
    if masks.shape != shape:
        raise ValueError(f"masks must have the maps' shape {shape}, not {masks.shape}")
    masks = masks.astype(bool)
    if ignore is not None:
        ignore = as_numpy(ignore)
        if ignore.shape != shape:
            raise ValueError(f"ignore must have the maps' shape {shape}, not {ignore.shape}")
        ignore = ignore.astype(bool) & ~masks  # object pixels win, as in the benchmark
    return masks, ignore
