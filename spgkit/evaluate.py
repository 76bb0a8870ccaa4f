"""Inference and evaluation: the maps a model gives and every metric on a dataset, used by
training, the report and the command line alike."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from spgkit.data import collate
from spgkit.distributed import Dist
from spgkit.localization import LocalizationEvaluator, resize_gt_boxes, score_maps, threshold_grid
from spgkit.localization.maps import foreground
from spgkit.model import WSOLModel


def to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's images and labels on ``device``."""
    return batch["images"].to(device, non_blocking=True), batch["labels"].to(device, non_blocking=True)


@torch.no_grad()
def predict_maps(model: WSOLModel, images: torch.Tensor, classes: torch.Tensor | None = None, protocol: str = "benchmark"):
    """Logits and (N, H, W) localization maps in [0, 1] at image resolution for ``classes`` (top-1
    if None), made as the evaluation ``protocol`` defines (:func:`~spgkit.localization.maps.score_maps`).
    Heads that erase (ACoL) erase the region of ``classes``, as the WSOL benchmark does."""
    out = model(images, classes=classes)
    if classes is None:
        classes = out.logits.argmax(1)
    maps = score_maps(model.localization_maps(out, classes).float(), tuple(images.shape[-2:]), protocol)
    return out, maps


class PartScores:
    """Where a map sits, for datasets that annotate a discriminative part (SynthWSOL): the share of
    the map's above-threshold pixels that lie on the part, and the share of the object's pixels it
    covers, averaged over images, at one threshold (the chosen CAM threshold)."""

    def __init__(self, threshold: float, protocol: str):
        self.threshold, self.protocol = threshold, protocol
        self.sums = np.zeros(3)  # share on the part, share of the object covered, images

    def update(self, maps, part: np.ndarray, whole: np.ndarray) -> None:
        """Add (N, H, W) normalised maps with the parts' and the objects' bool masks."""
        kept = foreground(maps.cpu().numpy() if isinstance(maps, torch.Tensor) else maps, self.threshold, self.protocol)
        area = kept.sum((1, 2))
        on_part = np.where(area > 0, (kept & part).sum((1, 2)) / np.maximum(area, 1), 0.0)
        covered = (kept & whole).sum((1, 2)) / np.maximum(whole.sum((1, 2)), 1)
        self.sums += (on_part.sum(), covered.sum(), len(kept))

    def compute(self) -> dict[str, float]:
        """``on_part`` and ``object_covered``, in %."""
        return {"on_part": 100.0 * self.sums[0] / self.sums[2], "object_covered": 100.0 * self.sums[1] / self.sums[2]}


@torch.no_grad()
def evaluate(
    model: WSOLModel,
    dataset: Dataset,
    device: torch.device,
    *,
    batch_size: int = 64,
    thresholds: int = 100,
    cam_threshold: float = 0.2,
    protocol: str = "benchmark",
    dist_info: Dist | None = None,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, float]:
    """Classification accuracy and every localization metric of ``model`` on ``dataset``.

    The localization map of the ground-truth class is scored (GT-known); Top-1/Top-5 Loc also
    require the class to be right. ``protocol`` (see :data:`~spgkit.config.PROTOCOLS`) sets every
    definition from the resize of the map to the IoU. Where the dataset annotates a part
    (``part_box`` and ``part_mask``, as SynthWSOL does), the maps are also scored against the
    part: ``part_maxboxaccv2`` (MaxBoxAccV2 with the part box as the ground truth), and at
    ``cam_threshold`` ``on_part`` and ``object_covered`` (:class:`PartScores`). Under DDP each
    rank scores its shard and counts are summed.
    """
    dist_info = dist_info or Dist()
    model.eval()
    shard = Subset(dataset, range(dist_info.rank, len(dataset), dist_info.world)) if dist_info.world > 1 else dataset
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
    grid = threshold_grid(thresholds)
    evaluator = LocalizationEvaluator(thresholds=grid, cam_threshold=cam_threshold, protocol=protocol)
    part_boxes = LocalizationEvaluator(thresholds=grid, cam_threshold=cam_threshold, protocol=protocol)
    part_pixels = PartScores(cam_threshold, protocol)
    correct = np.zeros(3)  # top-1 hits, top-5 hits, images
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        images, labels = to_device(batch, device)
        out, maps = predict_maps(model, images, labels, protocol)
        top5 = out.logits.topk(min(5, out.logits.shape[1]), dim=1).indices
        top1_ok = (top5[:, 0] == labels).cpu().numpy()
        top5_ok = (top5 == labels[:, None]).any(1).cpu().numpy()
        size = tuple(images.shape[-2:])

        def boxes(key: str) -> list[np.ndarray]:
            return [resize_gt_boxes(b, o, size, protocol) for b, o in zip(batch[key], batch["original_size"])]

        masks = None if batch["masks"] is None else batch["masks"].numpy()
        evaluator.update(
            maps,
            boxes("original_boxes"),
            top1_correct=top1_ok,
            top5_correct=top5_ok,
            masks=masks,
            ignore=None if batch["ignore"] is None else batch["ignore"].numpy(),
        )
        if "original_part_box" in batch:
            part_boxes.update(maps, boxes("original_part_box"))
            part_pixels.update(maps, batch["part_mask"].numpy(), masks)
        correct += (top1_ok.sum(), top5_ok.sum(), len(labels))
    parts = int(part_pixels.sums[2]) > 0
    if dist_info.world > 1:
        for ev in (evaluator, part_boxes) if parts else (evaluator,):
            ev.load_state_dict({k: dist_info.sum(np.asarray(v)) for k, v in ev.state_dict().items()})
        correct = dist_info.sum(correct)
        part_pixels.sums = dist_info.sum(part_pixels.sums)
    metrics = evaluator.compute()
    metrics["top1_acc"] = 100.0 * correct[0] / correct[2]
    metrics["top5_acc"] = 100.0 * correct[1] / correct[2]
    if parts:
        metrics["part_maxboxaccv2"] = part_boxes.compute()["maxboxaccv2"]
        metrics.update(part_pixels.compute())
    return metrics
