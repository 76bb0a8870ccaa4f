"""Inference and evaluation: the maps a model gives and every metric on a dataset, used by
training, the report and the command line alike."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from spgkit.data import collate
from spgkit.data.diagnostics import Diagnostics, diagnostics_of, gt_boxes
from spgkit.distributed import Dist
from spgkit.localization import LocalizationEvaluator, score_maps, threshold_grid
from spgkit.model import WSOLModel


def to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's images and labels on ``device``."""
    return batch["images"].to(device, non_blocking=True), batch["labels"].to(device, non_blocking=True)


@torch.no_grad()
def feature_maps(model: WSOLModel, images: torch.Tensor, classes: torch.Tensor | None = None):
    """The model's output and its (N, h, w) float localization maps at feature resolution for
    ``classes`` (top-1 if None), before the evaluation resizes and normalises them. Heads that
    erase (ACoL) erase the region of ``classes``, as the WSOL benchmark does."""
    out = model(images, classes=classes)
    if classes is None:
        classes = out.logits.argmax(1)
    return out, model.localization_maps(out, classes).float()


def predict_maps(model: WSOLModel, images: torch.Tensor, classes: torch.Tensor | None = None, protocol: str = "benchmark"):
    """Logits and (N, H, W) localization maps in [0, 1] at image resolution for ``classes`` (top-1
    if None), made as the evaluation ``protocol`` defines (:func:`~spgkit.localization.score_maps`):
    a tensor, on the CPU in the benchmark protocol, on the model's device in the float one."""
    out, maps = feature_maps(model, images, classes)
    return out, score_maps(maps, tuple(images.shape[-2:]), protocol)


@torch.no_grad()
def figure_arrays(model: WSOLModel, dataset: Dataset, count: int, device: torch.device) -> dict[str, np.ndarray]:
    """What figures draw of the first ``count`` images of ``dataset`` beside their maps: the
    model's ``mean`` and ``std`` (to show the images), and what its heads offer figures
    (:attr:`~spgkit.heads.HeadOutput.visuals`), given the labels so that heads build their
    guidance, in eval mode: ``visual/<head>: <name>`` (``visual/<name>`` where the model has one
    head), each (count, h, w) as the head made it."""
    batch = collate([dataset[i] for i in range(min(count, len(dataset)))])
    out = model.eval()(*to_device(batch, device))
    visuals = {
        f"visual/{name}: {key}" if len(out.heads) > 1 else f"visual/{key}": value.cpu().numpy()
        for name, head in out.heads.items()
        for key, value in head.visuals.items()
    }
    return {"mean": np.array(model.backbone.mean), "std": np.array(model.backbone.std), **visuals}


class Scores:
    """Every metric :func:`evaluate` reports, accumulated batch by batch from maps that are
    already made: :func:`evaluate` feeds it a model's maps, ``spgkit score``
    (:mod:`spgkit.score`) maps written by any code, so both report the same numbers by the same
    code. ``diagnostics``, the dataset's (:func:`~spgkit.data.diagnostics.diagnostics_of`), are
    counted beside the generic metrics and reduced with them under DDP."""

    def __init__(
        self, thresholds: int = 100, cam_threshold: float | None = 0.2, protocol: str = "benchmark", per_image: bool = False,
        diagnostics: type[Diagnostics] | None = None,
    ):  # fmt: skip
        grid = threshold_grid(thresholds)
        if cam_threshold is None and per_image:
            raise ValueError("per-image scores need a CAM threshold (their boxes are taken at it)")
        # Without a CAM threshold the metrics at one (GT-known, Top-1 and Top-5 Loc, and the
        # diagnostics' own) are left out of compute(). The evaluator still needs one: the first
        # grid threshold adds no work (regions are found at it anyway) and changes no other metric.
        self.cam_threshold = cam_threshold
        cam = float(grid[0]) if cam_threshold is None else cam_threshold
        self.objects = LocalizationEvaluator(thresholds=grid, cam_threshold=cam, protocol=protocol, keep_images=per_image)
        self.diagnostics = None if diagnostics is None else diagnostics(grid, cam_threshold, protocol)
        self.protocol = protocol
        self.correct = np.zeros(3)  # top-1 hits, top-5 hits, images with logits
        self.per_image = per_image
        self._seen: list[dict[str, np.ndarray]] = []  # per batch, with per_image

    def update(self, batch: dict, maps, logits: torch.Tensor | None = None) -> None:
        """Add a batch of :func:`~spgkit.data.collate` (read through
        :func:`~spgkit.data.eval_transform`), with the (N, H, W) maps of its ground-truth classes
        at the images' resolution, made by :func:`~spgkit.localization.score_maps` in this
        protocol, and its (N, K) logits if any: without them there is no classification accuracy
        and no Top-1/Top-5 Loc."""
        top1_ok = top5_ok = None
        if logits is not None:
            labels = batch["labels"].to(logits.device)
            top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1_ok = (top5[:, 0] == labels).cpu().numpy()
            top5_ok = (top5 == labels[:, None]).any(1).cpu().numpy()
            self.correct += (top1_ok.sum(), top5_ok.sum(), len(labels))
        if self.per_image:
            seen = {"image_id": np.array(batch["image_ids"], dtype=str), "label": batch["labels"].numpy()}
            if logits is not None:
                seen.update(top1_correct=top1_ok, top5_correct=top5_ok)
            self._seen.append(seen)
        self.objects.update(
            maps,
            gt_boxes(batch, "original_boxes", self.protocol),
            top1_correct=top1_ok,
            top5_correct=top5_ok,
            masks=None if batch["masks"] is None else batch["masks"].numpy(),
            ignore=None if batch["ignore"] is None else batch["ignore"].numpy(),
        )
        if self.diagnostics is not None:
            self.diagnostics.update(batch, maps)

    def images(self) -> dict[str, np.ndarray]:
        """What each image scored, in the order seen (needs ``per_image``): ``image_id``,
        ``label`` and, with logits, ``top1_correct`` and ``top5_correct``, beside the object
        boxes' IoUs and chosen box of :meth:`LocalizationEvaluator.images
        <spgkit.localization.LocalizationEvaluator.images>`. This process's images only."""
        return {k: np.concatenate([seen[k] for seen in self._seen]) for k in self._seen[0]} | self.objects.images()

    def compute(self, dist_info: Dist | None = None) -> dict[str, float]:
        """The metrics, in %, the dataset's diagnostics' last; under DDP the counts of every rank
        are summed first."""
        dist_info = dist_info or Dist()
        if dist_info.world > 1:
            for counts in (self.objects, self.diagnostics) if self.diagnostics is not None else (self.objects,):
                counts.load_state_dict({k: dist_info.sum(np.asarray(v)) for k, v in counts.state_dict().items()})
            self.correct = dist_info.sum(self.correct)
        metrics = self.objects.compute()
        if self.cam_threshold is None:
            for key in ("gt_known_loc", "top1_loc", "top5_loc"):
                metrics.pop(key, None)
        if self.correct[2]:
            metrics["top1_acc"] = 100.0 * self.correct[0] / self.correct[2]
            metrics["top5_acc"] = 100.0 * self.correct[1] / self.correct[2]
        if self.diagnostics is not None:
            metrics.update(self.diagnostics.compute())
        return metrics


def unshard(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-image arrays of every rank, in the dataset's order: rank ``r`` of ``len(parts)``
    scored images ``r, r + world, ...`` (:func:`evaluate`'s shards)."""
    world = len(parts)
    total = sum(len(next(iter(part.values()))) for part in parts)
    order = np.concatenate([np.arange(r, total, world) for r in range(world)])
    out = {}
    for key in parts[0]:
        joined = np.concatenate([part[key] for part in parts])
        out[key] = np.empty_like(joined)
        out[key][order] = joined
    return out


@torch.no_grad()
def evaluate(
    model: WSOLModel,
    dataset: Dataset,
    device: torch.device,
    *,
    batch_size: int = 64,
    thresholds: int = 100,
    cam_threshold: float | None = 0.2,
    protocol: str = "benchmark",
    dist_info: Dist | None = None,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "eval",
    per_image: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """Classification accuracy and every localization metric of ``model`` on ``dataset``; with
    ``per_image``, also what each image scored: ``(metrics, images)``.

    The localization map of the ground-truth class is scored (GT-known); Top-1/Top-5 Loc also
    require the class to be right. ``protocol`` (see :data:`~spgkit.config.PROTOCOLS`) sets every
    definition from the resize of the map to the IoU. Where the dataset contributes diagnostics
    (:func:`~spgkit.data.diagnostics.diagnostics_of`: SynthWSOL scores the maps against the part
    its images annotate, :class:`~spgkit.data.synth_parts.PartScores`), their metrics follow.
    Under DDP each rank scores its shard and counts are summed. The metrics are counted by
    :class:`Scores`. ``cam_threshold=None`` leaves out every metric taken at one (GT-known, Top-1
    and Top-5 Loc, the diagnostics' own): what is reported without a threshold chosen on held-out
    data is threshold-free (MaxBoxAcc, MaxBoxAccV2, PxAP); ``per_image`` needs a threshold.

    ``images`` holds, per image of ``dataset`` in order (gathered from every rank under DDP), the
    arrays of :meth:`Scores.images` and ``map`` (N, h, w), the float32 maps of
    :func:`feature_maps`, and the grid: ``thresholds``, ``iou_thresholds``, ``cam_threshold``."""
    dist_info = dist_info or Dist()
    model.eval()
    shard = Subset(dataset, range(dist_info.rank, len(dataset), dist_info.world)) if dist_info.world > 1 else dataset
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
    scores = Scores(thresholds, cam_threshold, protocol, per_image, diagnostics_of(dataset))
    maps = _score_batches(model, tqdm(loader, desc=desc, disable=not progress, leave=False), device, scores, protocol, keep=per_image)
    metrics = scores.compute(dist_info)
    if not per_image:
        return metrics
    seen = unshard(dist_info.gather(scores.images() | {"map": np.concatenate(maps)}))
    ev = scores.objects
    return metrics, seen | {"thresholds": ev.thresholds, "iou_thresholds": np.array(ev.iou_thresholds), "cam_threshold": np.float64(ev.cam_threshold)}


def _score_batches(model: WSOLModel, batches, device: torch.device, scores: Scores, protocol: str, keep: bool) -> list[np.ndarray]:
    """Add to ``scores`` the maps of the ground-truth classes, batch by batch; with ``keep``, the
    maps at feature resolution of each batch (float32, on the CPU)."""
    kept = []
    for batch in batches:
        images, labels = to_device(batch, device)
        out, maps = feature_maps(model, images, labels)
        scores.update(batch, score_maps(maps, tuple(images.shape[-2:]), protocol), out.logits)
        if keep:
            kept.append(maps.cpu().numpy())
    return kept
