"""Localization evaluation: maps to boxes at every threshold, and every WSOL metric.

- :mod:`~spgkit.localization.maps`: checks, per-image min-max normalisation, resizing.
- :mod:`~spgkit.localization.tree`: the merge (component) tree of a map's level sets, built once for
  all thresholds (compiled; where it is not built, :mod:`~spgkit.localization.readable` gives the same
  regions threshold by threshold with OpenCV).
- :mod:`~spgkit.localization.regions`: the regions (boxes) of a map at all thresholds from that tree,
  in the default definitions or the WSOL benchmark's exact OpenCV ones.
- :mod:`~spgkit.localization.evaluator`: :class:`LocalizationEvaluator`, streaming GT-known /
  Top-1 / Top-5 Loc, MaxBoxAcc, MaxBoxAccV2 and PxAP.
- :mod:`~spgkit.localization.torch_eval`: the batched GPU path of the default definitions.
"""

from spgkit.localization.evaluator import LocalizationEvaluator, box_iou, resize_gt_boxes
from spgkit.localization.maps import normalize_maps, resize_maps, score_maps
from spgkit.localization.regions import ThresholdBoxes, largest_region_box, threshold_boxes, threshold_grid

__all__ = [
    "LocalizationEvaluator",
    "ThresholdBoxes",
    "box_iou",
    "largest_region_box",
    "normalize_maps",
    "resize_gt_boxes",
    "resize_maps",
    "score_maps",
    "threshold_boxes",
    "threshold_grid",
]
