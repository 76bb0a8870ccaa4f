"""Adversarial Complementary Learning (Zhang et al., CVPR 2018) as an spgkit head.

``acol``  A second classifier B sees the backbone's ``high`` features with the most discriminative
          region erased: positions where the min-max normalised CAM of classifier A is >= delta are
          zeroed. Loss CE(B); the localization map is the element-wise max of A's and B's
          normalised maps.

By default it computes what the WSOL benchmark's ``InceptionAcol`` and ``wsol/method/acol.py``
compute (github:clovaai/wsolevaluation): delta 0.7, no dropout in either classifier, and the
erased region is the one of the class being localized: the ground truth in training and at
evaluation (the benchmark passes the labels into the model), the top-1 prediction only where no
label is known.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import spgkit
from spgkit.guidance import class_maps, minmax_normalize
from spgkit.config import BENCHMARK_SPACE, Param
from spgkit.heads import GuidanceHead, HeadContext, HeadOutput, ModelSpec, check_int, check_number
from spgkit.model import Classifier


class ACoL(GuidanceHead):
    """ACoL erasing with a second classifier.

    Args:
        spec: model spec.
        delta: erasing threshold on A's normalised CAM: 0.7 in the WSOL benchmark (the default),
            0.6 in the ACoL authors' code.
        width: A3 width of classifier B (defaults to classifier A's).
        dropout: dropout of classifier B (0 in both reference codes). Classifier A's dropout is
            the study's; it defaults to 0 in an arm with this head (:attr:`classifier_dropout`).
    """

    name = "acol"
    search_space = (Param("delta", "uniform", 0.0, 1.0, source=f"{BENCHMARK_SPACE}; Murtaza et al. 2025 list the same"),)
    classifier_dropout = 0.0

    def __init__(
        self,
        spec: ModelSpec,
        *,
        delta: float = 0.7,
        width: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__(spec)
        self.delta = check_number(self.name, "delta", delta, 0.0, 1.0)
        width = spec.classifier_channels if width is None else check_int(self.name, "width", width)
        dropout = check_number(self.name, "dropout", dropout, 0.0, 1.0, high_open=True)
        self.classifier_b = Classifier(spec.stage("high").channels, spec.num_classes, width, dropout)

    def forward(self, ctx: HeadContext) -> HeadOutput:
        with torch.no_grad():
            keep = minmax_normalize(class_maps(ctx.classifier.cams, ctx.classes)) < self.delta
        # A's CAMs come from the same ``high`` features, so the mask matches them position for position.
        out_b = self.classifier_b(ctx.features["high"] * keep[:, None])
        visuals = {"erased": (~keep).to(torch.uint8)}  # 1 where A's region was erased for B
        # B learns the same targets as A: the labels, or the mixed labels of an arm with CutMix.
        losses = {} if ctx.labels is None else {"ce_b": F.cross_entropy(out_b.logits, ctx.targets)}
        return HeadOutput(losses=losses, map=out_b.cams, visuals=visuals)


@spgkit.hookimpl
def spgkit_register_heads(register):
    """ACoL."""
    register(ACoL)
