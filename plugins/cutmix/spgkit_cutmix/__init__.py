"""CutMix (Yun et al., ICCV 2019) as an spgkit head.

``cutmix``  In training, with probability ``prob`` per batch, a box of every image is replaced by
            the same box of another image of the batch (one random permutation), and the image's
            target becomes its own label weighted by the share of pixels it kept and the other
            image's label weighted by the rest. The classification loss against these targets is
            ``lam * CE(own) + (1 - lam) * CE(other)``. Nothing changes at test time.

By default it computes what the WSOL benchmark's ``wsol/method/cutmix.py`` and its training loop
compute (github:clovaai/wsolevaluation): ``beta`` 1 and ``prob`` 1; ``lam ~ Beta(beta, beta)``;
a box of ``int(H * sqrt(1 - lam))`` rows and ``int(W * sqrt(1 - lam))`` columns (each halved with
floor on either side of a uniformly drawn centre pixel, clipped to the image); ``lam`` then set to
the share of pixels outside the clipped box. The draws come from torch's generator, not numpy's,
so the boxes are the same in law, not draw for draw.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

import spgkit
from spgkit.boxes import NO_BOXES, check_boxes
from spgkit.config import BENCHMARK_SPACE, Param
from spgkit.heads import GuidanceHead, ModelSpec, check_number


def cut_box(height: int, width: int, lam: float, center: tuple[int, int]) -> np.ndarray:
    """The region pasted for ``lam`` around ``center`` (row, column) of a ``height`` x ``width``
    image, as a box of spgkit's convention (:mod:`spgkit.boxes`): ``[[x0, y0, x1,
    y1]]``, whole pixels, ``x1, y1`` excluded; :data:`~spgkit.boxes.NO_BOXES` where
    the region has no pixel (a side shorter than 2 pixels, or ``lam`` 1)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    row, col = center
    y0, y1 = min(max(row - cut_h // 2, 0), height), min(max(row + cut_h // 2, 0), height)
    x0, x1 = min(max(col - cut_w // 2, 0), width), min(max(col + cut_w // 2, 0), width)
    if x0 == x1 or y0 == y1:
        return NO_BOXES
    return check_boxes(np.array([[x0, y0, x1, y1]], dtype=np.float64), (height, width))


def mix(images: torch.Tensor, targets: torch.Tensor, order: torch.Tensor, boxes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch with the region of ``boxes`` (:func:`cut_box`) of image ``i`` taken from image
    ``order[i]``, and the targets mixed by the share of pixels each image keeps: ``lam * targets +
    (1 - lam) * targets[order]``. ``targets`` are (N, K) class probabilities."""
    height, width = images.shape[-2:]
    mixed = images.clone()
    pasted = 0
    for x0, y0, x1, y1 in boxes.astype(int).tolist():  # a box's rows y0:y1 and columns x0:x1
        mixed[:, :, y0:y1, x0:x1] = images[order, :, y0:y1, x0:x1]
        pasted += (y1 - y0) * (x1 - x0)
    lam = 1.0 - pasted / (height * width)
    return mixed, lam * targets + (1.0 - lam) * targets[order]


class CutMix(GuidanceHead):
    """CutMix: paste a box of another image of the batch and mix the labels by area.

    Args:
        spec: the model spec (its number of classes sizes the mixed targets).
        beta: the parameter of the Beta(beta, beta) law of ``lam`` (1: uniform; the benchmark's
            ``cutmix_beta``). 0 turns mixing off.
        prob: the probability that a batch is mixed (1, the benchmark's ``cutmix_prob``).
    """

    name = "cutmix"
    search_space = (
        Param("beta", "log", 0.5, 10.0, source=f"spgkit's stand-in for the size prior 1/Uniform(0, 2] recalled from {BENCHMARK_SPACE} (its tail cut at 10)"),
        Param("prob", "uniform", 0.0, 1.0, source=f"the mix rate, {BENCHMARK_SPACE}"),
    )

    def __init__(self, spec: ModelSpec, *, beta: float = 1.0, prob: float = 1.0):
        super().__init__(spec)
        self.beta = check_number(self.name, "beta", beta, 0.0)
        self.prob = check_number(self.name, "prob", prob, 0.0, 1.0)

    def transform_batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.beta == 0 or (self.prob < 1 and torch.rand(()).item() >= self.prob):
            return images, targets
        beta = torch.tensor(float(self.beta))
        lam = torch.distributions.Beta(beta, beta).sample().item()
        order = torch.randperm(len(images)).to(images.device)
        height, width = images.shape[-2:]
        center = (int(torch.randint(height, ())), int(torch.randint(width, ())))
        if targets.ndim == 1:
            targets = F.one_hot(targets, self.spec.num_classes).to(images.dtype)
        return mix(images, targets, order, cut_box(height, width, lam, center))


@spgkit.hookimpl
def spgkit_register_heads(register):
    """CutMix."""
    register(CutMix)
