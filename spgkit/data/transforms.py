"""The WSOL benchmark's train and evaluation pipelines, as ``torchvision.transforms.v2`` on samples.

Both take a whole :class:`~spgkit.data.Sample` and keep ``boxes``, ``mask``, ``ignore`` (and any
other ``tv_tensors``, e.g. SynthWSOL's ``part_box``/``part_mask``) aligned with the image. Masks are
resized with nearest-neighbour sampling (torchvision's rule for masks), so after a non-integer
resize a mask's extent may differ from its box by up to one pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet RGB in [0, 1] (the default normalisation)."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet RGB in [0, 1]."""


def train_transform(
    size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Compose:
    """The benchmark's training pipeline: resize to a square of ``round(size * 256 / 224)``,
    random crop ``size``, random horizontal flip, convert to float in [0, 1], normalise.

    Boxes follow every step. A crop clamps boxes to the crop window; a box that the crop cuts
    away entirely is kept, clamped to zero width or height (so box counts never change and
    nothing crashes; training does not read boxes). Pass ``mean = std = (0.5, 0.5, 0.5)`` for
    TF-style weights.
    """
    resized = round(size * 256 / 224)
    return v2.Compose(
        [
            v2.Resize((resized, resized), antialias=True),
            v2.RandomCrop(size),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def keep_original_boxes(sample: dict) -> dict:
    """Add ``original_<key>`` (numpy, the sample's convention) for every box entry (``boxes``, and
    SynthWSOL's ``part_box``) and ``original_size`` ``(H, W)``: the evaluator resizes ground-truth
    boxes from these, in the evaluation protocol's arithmetic (the WSOL benchmark truncates the
    scaled corners to integers)."""
    kept = {
        f"original_{key}": value.as_subclass(torch.Tensor).numpy().copy()
        for key, value in sample.items()
        if isinstance(value, tv_tensors.BoundingBoxes)
    }
    return {**sample, **kept, "original_size": tuple(sample["boxes"].canvas_size)}


def eval_transform(
    size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Compose:
    """The benchmark's evaluation pipeline: resize to ``size x size`` (no crop, aspect ratio not
    kept), convert to float in [0, 1], normalise. The boxes before resizing are kept too
    (:func:`keep_original_boxes`)."""
    return v2.Compose(
        [
            keep_original_boxes,
            v2.Resize((size, size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )
