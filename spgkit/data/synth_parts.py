"""SynthWSOL's diagnostics (:class:`~spgkit.data.diagnostics.Diagnostics`): where a map sits
against the discriminative part its images annotate (``part_box``, ``part_mask``), in three
metrics, and the lines of a study's reading built on them. :class:`~spgkit.data.SynthWSOL` offers
them as its ``diagnostics``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from spgkit.data.diagnostics import gt_boxes
from spgkit.localization import LocalizationEvaluator, get_protocol
from spgkit.localization.maps import as_numpy

#: Top-1 Acc points an arm may fall below the baseline's (CAM's) before the part reading says it
#: lost its classification: that far below, its map follows no class (near flat, it "covers" the
#: object by covering everything), so its coverage is said apart instead of ranked.
NO_CLASS_TOP1_DROP = 20


class PartScores:
    """Where a map sits against the part: ``part_maxboxaccv2``, MaxBoxAccV2 with the part's box as
    the ground truth; and at the CAM threshold, averaged over images, ``on_part``, the share of the
    map's above-threshold pixels that lie on the part, and ``object_covered``, the share of the
    object's pixels it covers (in %). Without a CAM threshold, ``part_maxboxaccv2`` alone."""

    columns = {"part_maxboxaccv2": "Part MaxBoxAccV2", "on_part": "On part", "object_covered": "Object covered"}
    paired = ("object_covered",)
    figure_boxes = {"part_box": "yellow"}

    def __init__(self, thresholds: np.ndarray, cam_threshold: float | None, protocol: str):
        # The box evaluator needs a CAM threshold even where none was chosen: the grid's first
        # adds no work and changes no MaxBoxAccV2 (as in spgkit.evaluate.Scores).
        self.threshold = float(thresholds[0]) if cam_threshold is None else cam_threshold
        self.at_threshold = cam_threshold is not None
        self.protocol = get_protocol(protocol)
        self.boxes = LocalizationEvaluator(thresholds=thresholds, cam_threshold=self.threshold, protocol=protocol)
        self.sums = np.zeros(3)  # share on the part, share of the object covered, images

    def update(self, batch: dict, maps: Any) -> None:
        """Add a batch's (N, H, W) normalised maps: against its part boxes, and its parts' and
        objects' masks."""
        self.boxes.update(maps, gt_boxes(batch, "original_part_box", self.protocol.name))
        self.update_pixels(maps, batch["part_mask"].numpy(), batch["masks"].numpy())

    def update_pixels(self, maps: Any, part: np.ndarray, whole: np.ndarray) -> None:
        """Add (N, H, W) normalised maps with the parts' and the objects' bool masks."""
        kept = self.protocol.foreground(as_numpy(maps), self.threshold)
        area = kept.sum((1, 2))
        on_part = np.where(area > 0, (kept & part).sum((1, 2)) / np.maximum(area, 1), 0.0)
        covered = (kept & whole).sum((1, 2)) / np.maximum(whole.sum((1, 2)), 1)
        self.sums += (on_part.sum(), covered.sum(), len(kept))

    def compute(self) -> dict[str, float]:
        """``part_maxboxaccv2`` and, at a CAM threshold, ``on_part`` and ``object_covered``, in %;
        nothing where no image was counted."""
        if not self.sums[2]:
            return {}
        metrics = {"part_maxboxaccv2": self.boxes.compute()["maxboxaccv2"]}
        if self.at_threshold:
            metrics |= {"on_part": 100.0 * self.sums[0] / self.sums[2], "object_covered": 100.0 * self.sums[1] / self.sums[2]}
        return metrics

    def state_dict(self) -> dict[str, np.ndarray]:
        """The part boxes' counts (``box.<key>``) and the pixel shares' sums (``sums``)."""
        return {**{f"box.{k}": v for k, v in self.boxes.state_dict().items()}, "sums": self.sums.copy()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the counts with ``state`` (from :meth:`state_dict`, possibly summed over ranks)."""
        self.boxes.load_state_dict({k.removeprefix("box."): v for k, v in state.items() if k.startswith("box.")})
        self.sums = np.asarray(state["sums"], dtype=np.float64)

    @classmethod
    def reading(cls, rows: list[dict[str, Any]], differences: list[dict[str, Any]], base: dict[str, Any]) -> list[str]:
        """Whether the baseline's map sits on the part, which arm covers most of the object and by
        how much, and which arms lost their classification (:data:`NO_CLASS_TOP1_DROP`)."""
        if "part_maxboxaccv2" not in base:
            return []
        baseline = base["arm"]
        gap = base["part_maxboxaccv2"] - base["maxboxaccv2"]
        where = "sits on the part" if gap > 0 else "does not sit on the part"
        lines = [
            f"{baseline}'s map {where}: its MaxBoxAccV2 is {base['part_maxboxaccv2']:.1f} against the part's box "
            f"and {base['maxboxaccv2']:.1f} against the object's ({gap:+.1f}); it covers {base['object_covered']:.1f} % "
            f"of the object, and {base['on_part']:.1f} % of what it keeps lies on the part."
        ]
        lost = [d for d in differences if d.get("top1_acc", 0) < -NO_CLASS_TOP1_DROP]
        ranked = sorted((d for d in differences if "object_covered" in d and d not in lost), key=lambda d: -d["object_covered"])
        lines += _coverage(rows, ranked, baseline)
        for d in lost:
            row = next(r for r in rows if r["arm"] == d["arm"])
            lines.append(
                f"{d['arm']} lost its classification ({row['top1_acc']:.1f} % Top-1, {d['top1_acc']:+.1f} on {baseline}): "
                f"its map, which no longer follows a class, covers {row['object_covered']:.1f} % of the object (not ranked)."
            )
        return lines


def _coverage(rows: list[dict[str, Any]], ranked: list[dict[str, Any]], baseline: str) -> list[str]:
    """The reading's line on the arm that covers the most of the object, of the ``ranked`` ones."""
    if not ranked:
        return []
    top = ranked[0]
    if top["object_covered"] <= 0:
        return [f"No arm covers more of the object than {baseline}."]
    row = next(r for r in rows if r["arm"] == top["arm"])
    return [
        f"{top['arm']} covers the most of the object: {row['object_covered']:.1f} %, {top['object_covered']:+.1f} "
        f"points on {baseline} (ahead on {top['object_covered_ahead']} of {top['seeds']} seeds), at "
        f"{top['maxboxaccv2']:+.1f} MaxBoxAccV2 and {top['top1_acc']:+.1f} Top-1."
    ]
