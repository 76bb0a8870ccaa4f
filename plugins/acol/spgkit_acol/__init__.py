"""Adversarial Complementary Learning (Zhang et al., CVPR 2018) as an spgkit head.

``acol``  A second classifier B sees the backbone's ``high`` features with the most discriminative
          region erased: positions where the min-max normalised CAM of classifier A for the
          ground-truth class (the top-1 prediction at inference) is >= delta are zeroed. Loss
          CE(B); the localization map is the element-wise max of A's and B's normalised maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import spgkit
from spgkit.guidance import class_maps, minmax_normalize
from spgkit.heads import GuidanceHead, HeadContext, HeadOutput, ModelSpec
from spgkit.model import Classifier


class ACoL(GuidanceHead):
    """ACoL erasing with a second classifier.

    Args:
        spec: model spec.
        delta: erasing threshold on A's normalised CAM; 0.6 in the ACoL code (the WSOL benchmark
            defaults to 0.7).
        width: A3 width of classifier B (defaults to classifier A's).
        dropout: dropout of classifier B.
    """

    name = "acol"
    needs_features = ("high",)

    def __init__(
        self,
        spec: ModelSpec,
        *,
        delta: float = 0.6,
        width: int | None = None,
        dropout: float = 0.5,
        loss_weight: float = 1.0,
    ):
        super().__init__(spec, loss_weight=loss_weight)
        self.delta = delta
        self.classifier_b = Classifier(
            spec.stages["high"].channels, spec.num_classes, width or spec.classifier_channels, dropout
        )

    def forward(self, ctx: HeadContext) -> HeadOutput:
        a = ctx.classifier
        classes = ctx.labels if ctx.labels is not None else a.logits.argmax(1)
        with torch.no_grad():
            keep = minmax_normalize(class_maps(a.cams, classes)) < self.delta
        # A's CAMs come from the same ``high`` features, so the mask matches them position for position.
        out_b = self.classifier_b(ctx.features["high"] * keep[:, None])
        extras = {"erased": ~keep}
        if ctx.labels is None:
            return HeadOutput(map=out_b.cams, extras=extras)
        return HeadOutput(losses={"ce_b": F.cross_entropy(out_b.logits, ctx.labels)}, map=out_b.cams, extras=extras)


@spgkit.hookimpl
def spgkit_register_heads(register):
    """ACoL."""
    register(ACoL)
