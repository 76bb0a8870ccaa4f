"""Self-produced Guidance (Zhang et al., ECCV 2018) as two spgkit heads.

``spg_b``  SPG-B: B1 on the backbone's ``mid`` stage, B2 on its ``late`` stage. B2 learns the seed
           mask of the classifier's CAM for the ground-truth class; B1 learns the seed mask of
           sigmoid(B2). ``shared=True`` (the paper's default) shares the second conv and the output
           layer between B1 and B2.
``spg_c``  SPG-C: on the classifier's A3 features, learns the seed mask of SPG-B's fused map
           (sigmoid(B1) + sigmoid(B2)) / 2, feeding pixel-level supervision back into the trunk.

At test time neither contributes a map: the classifier's CAM localizes.
"""

from __future__ import annotations

import torch
from torch import nn

import spgkit
from spgkit.guidance import class_maps, masked_bce, minmax_normalize, seed_mask, upsample
from spgkit.heads import GuidanceHead, HeadContext, HeadOutput, ModelSpec


def _conv_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


class SPGB(GuidanceHead):
    """SPG-B: two branches that learn seed masks of the CAM and of each other.

    Args:
        spec: model spec (stage channels).
        shared: share the second 3x3 conv and the 1x1 output conv of B1 and B2.
        width: filters of the branch convs (512 in the paper).
        b2_thresholds: (delta_h, delta_l) for the CAM seed that supervises B2; (0.7, 0.05) in the
            public SPG code, (0.7, 0.01) in the WSOL benchmark.
        b1_thresholds: (delta_h, delta_l) for the sigmoid(B2) seed that supervises B1.
        b1_role, b2_role: backbone roles the branches attach to (Mixed_5d and Mixed_6d on
            Inception-V3).
        normalize_scores: min-max normalise sigmoid(B2) per image before taking B1's seed, as
            the reference describes every score map. Off by default: raw sigmoid scores keep a
            flat map flat. Early in training sigmoid(B2) can exceed 0.5 everywhere, which makes
            B1's seed all object (no background pixel); normalising always leaves background.
    """

    name = "spg_b"
    needs_features = ("mid", "late")

    def __init__(
        self,
        spec: ModelSpec,
        *,
        shared: bool = True,
        width: int = 512,
        b2_thresholds: tuple[float, float] = (0.7, 0.05),
        b1_thresholds: tuple[float, float] = (0.5, 0.05),
        b1_role: str = "mid",
        b2_role: str = "late",
        normalize_scores: bool = False,
        loss_weight: float = 1.0,
    ):
        super().__init__(spec, loss_weight=loss_weight)
        self.shared = shared
        self.normalize_scores = normalize_scores
        self.b1_role, self.b2_role = b1_role, b2_role
        self.b2_thresholds, self.b1_thresholds = tuple(b2_thresholds), tuple(b1_thresholds)
        self.b1_first = _conv_relu(spec.stages[b1_role].channels, width)
        self.b2_first = _conv_relu(spec.stages[b2_role].channels, width)
        self.b1_second, self.b1_out = _conv_relu(width, width), nn.Conv2d(width, 1, 1)
        if shared:
            self.b2_second, self.b2_out = self.b1_second, self.b1_out
        else:
            self.b2_second, self.b2_out = _conv_relu(width, width), nn.Conv2d(width, 1, 1)

    def forward(self, ctx: HeadContext) -> HeadOutput:
        b1 = self.b1_out(self.b1_second(self.b1_first(ctx.features[self.b1_role])))
        b2 = self.b2_out(self.b2_second(self.b2_first(ctx.features[self.b2_role])))
        size = ctx.image_size
        prob1 = upsample(torch.sigmoid(b1.detach())[:, 0], size)
        prob2 = upsample(torch.sigmoid(b2.detach())[:, 0], size)
        extras = {"b1": prob1, "b2": prob2, "fused": (prob1 + prob2) / 2}
        if ctx.labels is None:
            return HeadOutput(extras=extras)
        cam = upsample(minmax_normalize(class_maps(ctx.classifier.cams.detach(), ctx.labels)), size)
        seed_b2 = seed_mask(cam, *self.b2_thresholds)
        seed_b1 = seed_mask(minmax_normalize(prob2) if self.normalize_scores else prob2, *self.b1_thresholds)
        extras.update(seed_b2=seed_b2, seed_b1=seed_b1)
        losses = {"b1": masked_bce(b1, seed_b1), "b2": masked_bce(b2, seed_b2)}
        return HeadOutput(losses=losses, extras=extras)


class SPGC(GuidanceHead):
    """SPG-C: a pixel-level branch on the classifier's A3 features, supervised by SPG-B.

    Args:
        spec: model spec (classifier channels).
        width: filters of the two 3x3 convs (512 in the paper).
        thresholds: (delta_h, delta_l) for the seed of SPG-B's fused map.
        normalize_scores: min-max normalise the fused map per image before taking the seed (see
            :class:`SPGB`).
    """

    name = "spg_c"
    needs_heads = ("spg_b",)

    def __init__(
        self,
        spec: ModelSpec,
        *,
        width: int = 512,
        thresholds: tuple[float, float] = (0.7, 0.1),
        normalize_scores: bool = False,
        loss_weight: float = 1.0,
    ):
        super().__init__(spec, loss_weight=loss_weight)
        self.thresholds = tuple(thresholds)
        self.normalize_scores = normalize_scores
        self.layers = nn.Sequential(
            _conv_relu(spec.classifier_channels, width), _conv_relu(width, width), nn.Conv2d(width, 1, 1)
        )

    def forward(self, ctx: HeadContext) -> HeadOutput:
        logits = self.layers(ctx.classifier.features)
        extras = {"c": upsample(torch.sigmoid(logits.detach())[:, 0], ctx.image_size)}
        if ctx.labels is None:
            return HeadOutput(extras=extras)
        fused = ctx.outputs["spg_b"].extras["fused"]
        seed = seed_mask(minmax_normalize(fused) if self.normalize_scores else fused, *self.thresholds)
        extras["seed_c"] = seed
        return HeadOutput(losses={"c": masked_bce(logits, seed)}, extras=extras)


@spgkit.hookimpl
def spgkit_register_heads(register):
    """SPG-B and SPG-C."""
    register(SPGB)
    register(SPGC)
