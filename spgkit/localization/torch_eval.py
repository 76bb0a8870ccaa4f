"""Batched localization on a GPU: the regions of every (image, threshold) pair at once.

The default definitions only (foreground ``map >= tau``, 8-connected regions, tight boxes, largest
region by pixel count with ties to the region met first in raster order): the same numbers as the
numpy path, which the tests check on the CPU. Each thresholded map is labelled by min-label
propagation (a 3x3 min-pool, written as a max-pool of negated labels) with pointer jumping, which
needs few iterations for blob-like regions; planes are processed in chunks to bound memory.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def component_labels(foreground: torch.Tensor) -> torch.Tensor:
    """8-connected component labels of a (P, H, W) bool stack: each foreground pixel gets the
    row-major index (within its plane) of the first pixel of its component; background gets H*W."""
    planes, height, width = foreground.shape
    hw = height * width
    if hw >= 2**24:
        raise ValueError(f"maps of {height}x{width} pixels are too large for float32 labels")
    # float32 holds every pixel index exactly below 2**24, and max_pool2d wants floats.
    index = torch.arange(hw, device=foreground.device, dtype=torch.float32).view(1, height, width)
    background = torch.tensor(float(hw), device=foreground.device)
    labels = torch.where(foreground, index, background)
    while True:
        smallest = -F.max_pool2d(-labels[:, None], kernel_size=3, stride=1, padding=1)[:, 0]
        smallest = torch.where(foreground, smallest, background)
        # Pointer jumping: a label is the index of a pixel of the same region; take that pixel's.
        flat = smallest.view(planes, hw)
        jumped = flat.gather(1, flat.clamp(max=hw - 1).long()).view(planes, height, width)
        new = torch.where(foreground, torch.minimum(smallest, jumped), background)
        if torch.equal(new, labels):
            return labels.long()
        labels = new


def _iou(boxes: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    # Same float64 arithmetic as boxes.box_iou, so results are identical.
    inter_w = (torch.minimum(boxes[..., 2], gt[..., 2]) - torch.maximum(boxes[..., 0], gt[..., 0]) + 1).clamp(min=0)
    inter_h = (torch.minimum(boxes[..., 3], gt[..., 3]) - torch.maximum(boxes[..., 1], gt[..., 1]) + 1).clamp(min=0)
    inter = inter_w * inter_h
    area_a = (boxes[..., 2] - boxes[..., 0] + 1) * (boxes[..., 3] - boxes[..., 1] + 1)
    area_b = (gt[..., 2] - gt[..., 0] + 1) * (gt[..., 3] - gt[..., 1] + 1)
    union = area_a + area_b - inter
    positive = union > 0
    return torch.where(positive, inter / torch.where(positive, union, torch.ones_like(union)), torch.zeros_like(union))


def batched_region_ious(
    normalized: torch.Tensor,
    gt_boxes: list[np.ndarray],
    thresholds: np.ndarray,
    max_pixels: int = 2**24,
) -> tuple[np.ndarray, np.ndarray]:
    """IoUs of the largest region's box and of the best region box, for every image and threshold.

    Args:
        normalized: (N, H, W) maps normalised to [0, 1], on any device.
        gt_boxes: N float arrays (n_i, 4), inclusive ``x0, y0, x1, y1``.
        thresholds: ascending thresholds.
        max_pixels: pixels labelled at once (planes x H x W); bounds memory.

    Returns:
        Two (N, T) float64 numpy arrays; an image with no region at a threshold scores 0.
    """
    device = normalized.device
    n, height, width = normalized.shape
    hw, t = height * width, len(thresholds)
    bounds = torch.as_tensor(thresholds, dtype=torch.float64, device=device)
    # Level of a pixel = number of thresholds at or below it (float64 comparisons, as numpy's).
    levels = torch.searchsorted(bounds, normalized.double().contiguous(), right=True)
    levels = levels.to(torch.int16 if t < 2**15 else torch.int32)  # gathered per plane below
    gt = _padded(gt_boxes).to(device)
    largest = torch.zeros(n * t, dtype=torch.float64, device=device)
    best = torch.zeros(n * t, dtype=torch.float64, device=device)
    xs = torch.arange(width, device=device).repeat(height)
    ys = torch.arange(height, device=device).repeat_interleave(width)
    chunk = max(1, max_pixels // hw)
    for start in range(0, n * t, chunk):
        plane = torch.arange(start, min(start + chunk, n * t), device=device)
        image, level = plane // t, plane % t
        region, count, boxes = _regions(levels[image] > level[:, None, None], xs, ys)
        if len(region) == 0:
            continue
        owner = region // hw  # plane (within the chunk) of each region
        iou = _iou(boxes[:, None, :], gt[image[owner]]).amax(dim=1)  # NaN padding boxes score 0
        best.scatter_reduce_(0, plane[owner], iou, "amax")
        # Largest region: most pixels, then the smallest label (first pixel in raster order).
        key = count * hw + (hw - 1 - region % hw)
        top = torch.full((len(plane),), -1, dtype=torch.int64, device=device).scatter_reduce_(0, owner, key, "amax")
        win = key == top[owner]
        largest[plane[owner[win]]] = iou[win]
    return largest.view(n, t).cpu().numpy(), best.view(n, t).cpu().numpy()


def _padded(gt_boxes: list[np.ndarray]) -> torch.Tensor:
    """The images' box lists as one (N, most, 4) float64 tensor, shorter lists padded with NaN."""
    gt = torch.full((len(gt_boxes), max(len(b) for b in gt_boxes), 4), float("nan"), dtype=torch.float64)
    for i, boxes in enumerate(gt_boxes):
        gt[i, : len(boxes)] = torch.from_numpy(np.asarray(boxes, dtype=np.float64))
    return gt


def _regions(foreground: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The connected regions of (P, H, W) bool planes: each one's slot ``plane * H * W + label``
    (ascending), its pixel count and its float64 box ``x0, y0, x1, y1``; ``xs`` and ``ys`` are
    the column and row of each pixel in raster order."""
    planes, height, width = foreground.shape
    hw, device = height * width, foreground.device
    labels = component_labels(foreground).view(planes, hw)
    # Per-region statistics, indexed by (plane, label); background pixels are left out.
    where = foreground.view(planes, hw).nonzero(as_tuple=True)
    slot = where[0] * hw + labels[where]
    size, big = planes * hw, torch.iinfo(torch.int64).max
    x, y = xs[where[1]], ys[where[1]]
    x0 = torch.full((size,), big, device=device).scatter_reduce_(0, slot, x, "amin")
    y0 = torch.full((size,), big, device=device).scatter_reduce_(0, slot, y, "amin")
    x1 = torch.full((size,), -1, device=device).scatter_reduce_(0, slot, x, "amax")
    y1 = torch.full((size,), -1, device=device).scatter_reduce_(0, slot, y, "amax")
    count = torch.zeros(size, dtype=torch.int64, device=device).scatter_add_(0, slot, torch.ones_like(slot))
    region = (count > 0).nonzero(as_tuple=True)[0]  # one slot per region
    return region, count[region], torch.stack([x0[region], y0[region], x1[region], y1[region]], dim=1).double()
