"""Localization evaluation: maps to boxes at every threshold, and every WSOL metric.

- :mod:`~spgkit.localization.maps`: checks, per-image min-max normalisation, resizing.
- :mod:`~spgkit.localization.tree`: the merge (component) tree of a map's level sets, built once for
  all thresholds (compiled; where it is not built, :mod:`~spgkit.localization.readable` gives the same
  regions threshold by threshold with OpenCV).
- :mod:`~spgkit.localization.regions`: the regions (boxes) of a map at all thresholds from that tree,
  in the default definitions or the WSOL benchmark's exact OpenCV ones.
- :mod:`~spgkit.localization.protocol`: :class:`Protocol`, each evaluation protocol's definitions
  (resize, normalisation, thresholds, regions, ground-truth boxes, PxAP), and :func:`get_protocol`.
- :mod:`~spgkit.localization.evaluator`: :class:`LocalizationEvaluator`, streaming GT-known /
  Top-1 / Top-5 Loc, MaxBoxAcc, MaxBoxAccV2 and PxAP.
- :mod:`~spgkit.localization.torch_eval`: the batched GPU path of the default definitions.
"""

from spgkit.boxes import box_iou
from spgkit.localization.evaluator import LocalizationEvaluator
from spgkit.localization.maps import normalize_maps, resize_maps
from spgkit.localization.protocol import Protocol, get_protocol, largest_region_box, resize_gt_boxes, score_maps, threshold_boxes
from spgkit.localization.regions import ThresholdBoxes, threshold_grid

__all__ = [
    "LocalizationEvaluator",
    "Protocol",
    "ThresholdBoxes",
    "box_iou",
    "get_protocol",
    "largest_region_box",
    "normalize_maps",
    "resize_gt_boxes",
    "resize_maps",
    "score_maps",
    "threshold_boxes",
    "threshold_grid",
]
