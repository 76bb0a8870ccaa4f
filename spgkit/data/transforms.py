"""The WSOL benchmark's train and evaluation pipelines, as ``torchvision.transforms.v2`` on samples.

Both take a whole :class:`~spgkit.data.Sample` and keep ``boxes``, ``mask``, ``ignore`` (and any
other ``tv_tensors``, e.g. SynthWSOL's ``part_box``/``part_mask``) aligned with the image. Masks are
resized with nearest-neighbour sampling, so after a non-integer resize a mask's extent may differ
from its box by up to one pixel. How images and masks are resized is one of :data:`RESIZES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from spgkit.config import RESIZES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet RGB in [0, 1] (the default normalisation)."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet RGB in [0, 1]."""


class BenchmarkResize(v2.Resize):
    """Resize to ``size = (height, width)`` as the WSOL benchmark's data pipeline does: images with
    PIL's bilinear filter (its loaders resize PIL images with ``transforms.Resize``), masks with
    OpenCV's nearest neighbour (its ``load_mask_image``); boxes as torchvision scales them. Images
    are uint8 (3, H, W), masks (H, W)."""

    def __init__(self, size: Sequence[int]):
        super().__init__(list(size))

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        height, width = self.size
        if isinstance(inpt, tv_tensors.Image):
            # Plane by plane: PIL filters every band alike, so this is the RGB image's resize (a
            # test checks), without two transposes (a quarter of the time).
            planes = [np.asarray(Image.fromarray(plane).resize((width, height), Image.BILINEAR)) for plane in inpt.numpy()]
            return tv_tensors.wrap(torch.from_numpy(np.stack(planes)), like=inpt)
        if isinstance(inpt, tv_tensors.Mask):
            resized = cv2.resize(inpt.numpy(), (width, height), interpolation=cv2.INTER_NEAREST)
            return tv_tensors.wrap(torch.from_numpy(resized), like=inpt)
        return super().transform(inpt, params)


def _resize(size: int, resize: str) -> v2.Transform:
    if resize not in RESIZES:
        raise ValueError(f"unknown resize {resize!r}; use one of {sorted(RESIZES)}")
    return BenchmarkResize((size, size)) if resize == "benchmark" else v2.Resize((size, size), antialias=True)


def train_transform(
    size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, resize: str = "benchmark"
) -> v2.Compose:
    """The benchmark's training pipeline: resize to a square of ``round(size * 256 / 224)``,
    random crop ``size``, random horizontal flip, convert to float in [0, 1], normalise.

    Boxes follow every step. A crop clamps boxes to the crop window; a box that the crop cuts
    away entirely is kept, clamped to zero width or height (so box counts never change and
    nothing crashes; training does not read boxes). Pass ``mean = std = (0.5, 0.5, 0.5)`` for
    TF-style weights; ``resize`` is one of :data:`RESIZES`.
    """
    return v2.Compose(
        [
            _resize(round(size * 256 / 224), resize),
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


def image_transform(
    size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, resize: str = "benchmark"
) -> v2.Compose:
    """The benchmark's evaluation pipeline for an image alone (or a sample without original boxes
    to keep): resize to ``size x size`` (no crop, aspect ratio not kept) as ``resize`` (one of
    :data:`RESIZES`) says, convert to float in [0, 1], normalise."""
    return v2.Compose([_resize(size, resize), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def eval_transform(
    size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, resize: str = "benchmark"
) -> v2.Compose:
    """The benchmark's evaluation pipeline (:func:`image_transform`) on a sample, keeping its boxes
    before resizing too (:func:`keep_original_boxes`)."""
    return v2.Compose([keep_original_boxes, image_transform(size, mean, std, resize)])
