"""Attention-based Dropout Layer (Choe and Shim, CVPR 2019) as an spgkit head.

``adl``  In training, layers inside the network multiply their output by one of two maps built
         from its self-attention, the channel mean ``A``: the *drop mask*, 0 where ``A`` reaches
         ``threshold`` times the image's maximum of ``A`` (the most discriminative region) and 1
         elsewhere; or the *importance map* ``sigmoid(A)``. One draw per layer and batch picks the
         drop mask with probability ``drop_rate``. At test time the layers do nothing.

By default it computes what the WSOL benchmark's ``wsol/method/adl.py`` and ``InceptionAdl``
compute (github:clovaai/wsolevaluation): drop rate 0.75, threshold 0.9, the layers after Mixed_5d
(before the pool that a small feature map adds), after Mixed_6e and after the classifier's second
A3 conv, and a classifier without dropout. Its draw is ``torch.rand`` on the CPU generator, one per
layer in that order, as there: with the same torch seed, the same weights and the same batch, the
two models compute the same step. On a backbone other than the Inception-V3, name the layers with
``at``.
"""

from __future__ import annotations

from typing import Callable

import torch

import spgkit
from spgkit.config import BENCHMARK_SPACE, Param
from spgkit.heads import GuidanceHead, ModelSpec, check_number

#: Where the WSOL benchmark's Inception-V3 has its ADL layers, as module paths in spgkit's model.
INCEPTION_LAYERS = ("backbone.Mixed_5d", "backbone.Mixed_6e", "classifier.a3")


def attention_dropout(features: torch.Tensor, use_drop: torch.Tensor, threshold: float) -> torch.Tensor:
    """``features`` (N, C, h, w) times the drop mask (``use_drop`` = 1) or the importance map
    (``use_drop`` = 0) of their channel mean ``A``: ``A < threshold * max(A)`` per image, or
    ``sigmoid(A)``. ``use_drop`` is a 0-d tensor, mixed as ``(1 - b) * importance + b * drop``."""
    attention = features.mean(1, keepdim=True)
    importance = attention.sigmoid()
    drop = (attention < threshold * attention.amax((2, 3), keepdim=True)).to(features.dtype)
    return features * ((1 - use_drop) * importance + use_drop * drop)


class ADL(GuidanceHead):
    """Attention-based dropout at the layers ``at``.

    Args:
        spec: the model spec (unused: the head has no parameters).
        drop_rate: the probability that a layer applies the drop mask rather than the importance
            map in a step (0.75, the benchmark's ``adl_drop_rate``).
        threshold: the share of the maximum attention at and above which the drop mask drops
            (0.9, the benchmark's ``adl_threshold``; its layer's own default, 0.8, is not used).
        at: module paths in the model whose outputs pass through ADL, in the order they run
            (default: the benchmark's Inception-V3 layers, :data:`INCEPTION_LAYERS`).
    """

    name = "adl"
    search_space = (
        Param("drop_rate", "uniform", 0.0, 1.0, source=f"{BENCHMARK_SPACE}; Murtaza et al. 2025 list the same"),
        Param("threshold", "uniform", 0.0, 1.0, source=f"{BENCHMARK_SPACE}; Murtaza et al. 2025 list the same"),
    )
    classifier_dropout = 0.0  # the benchmark's InceptionAdl classifier has no dropout

    def __init__(self, spec: ModelSpec, *, drop_rate: float = 0.75, threshold: float = 0.9, at: tuple[str, ...] = INCEPTION_LAYERS):
        super().__init__(spec)
        self.drop_rate = check_number(self.name, "drop_rate", drop_rate, 0.0, 1.0)
        self.threshold = check_number(self.name, "threshold", threshold, 0.0, 1.0)
        if isinstance(at, str):
            raise TypeError(f"head {self.name!r}: at must be a tuple of module paths, not one string; write at=({at!r},)")
        if not isinstance(at, (tuple, list)) or not all(isinstance(path, str) for path in at):
            raise TypeError(f"head {self.name!r}: at must be a tuple of module paths (strings), not {at!r}")
        if not at:
            raise ValueError(f"head {self.name!r}: at must name at least one module")
        self.at = tuple(at)

    def feature_transforms(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        return {path: self._drop for path in self.at}

    def _drop(self, features: torch.Tensor) -> torch.Tensor:
        # A 0-d CPU tensor mixes with tensors on any device, as in the benchmark.
        use_drop = (torch.rand(()) + self.drop_rate).floor()
        return attention_dropout(features, use_drop, self.threshold)


@spgkit.hookimpl
def spgkit_register_heads(register):
    """ADL."""
    register(ADL)
