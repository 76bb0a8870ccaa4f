"""Self-produced Guidance (Zhang et al., ECCV 2018) as two spgkit heads.

``spg_b``  SPG-B: B1 on the backbone's ``mid`` stage, B2 on its ``late`` stage. B2 learns the seed
           mask of the classifier's CAM for the ground-truth class; B1 learns the seed mask of
           sigmoid(B2). ``shared=True`` (the paper's default) shares the second conv and the output
           layer between B1 and B2.
``spg_c``  SPG-C: on the classifier's A3 features, learns the seed mask of SPG-B's fused map
           (sigmoid(B1) + sigmoid(B2)) / 2, feeding pixel-level supervision back into the trunk.

By default both compute what the WSOL benchmark's ``InceptionSpg`` and ``wsol/method/spg.py``
compute (github:clovaai/wsolevaluation): raw maps are upsampled to the input size first, then
normalised or passed through a sigmoid; seeds and losses are taken at the input size. At test time
neither head contributes a map: the classifier's CAM localizes.
"""

from __future__ import annotations

import torch
from torch import nn

import spgkit
from spgkit.guidance import class_maps, masked_bce, minmax_normalize, seed_mask, seed_stats, upsample
from spgkit.config import BENCHMARK_SPACE, Param
from spgkit.heads import GuidanceHead, HeadContext, HeadOutput, ModelSpec, check_int, check_thresholds
from spgkit.init import xavier_init

#: (delta_h, delta_l) of the CAM seed that supervises B2, named after their source.
B2_THRESHOLDS = {"wsol_benchmark": (0.7, 0.01), "spg_code": (0.7, 0.05)}


def _conv_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


def _thresholds(head: str, arg: str, value: str | tuple[float, float], presets: bool = False) -> tuple[float, float]:
    """``(delta_h, delta_l)`` from a pair, or from a preset name of :data:`B2_THRESHOLDS` where
    ``presets``; a one-line ValueError or TypeError names the head, the argument and the values."""
    if isinstance(value, str) and presets:
        if value not in B2_THRESHOLDS:
            raise ValueError(f"head {head!r}: unknown {arg} preset {value!r}; presets: {sorted(B2_THRESHOLDS)} or (delta_h, delta_l)")
        return B2_THRESHOLDS[value]
    return check_thresholds(head, arg, value)


class SPGB(GuidanceHead):
    """SPG-B: two branches that learn seed masks of the CAM and of each other.

    Args:
        spec: model spec (stage channels).
        shared: share the second 3x3 conv and the 1x1 output conv of B1 and B2.
        width: filters of the branch convs (512 in the paper).
        b2_thresholds: (delta_h, delta_l) for the CAM seed that supervises B2, or a preset of
            :data:`B2_THRESHOLDS`: ``"wsol_benchmark"`` (0.7, 0.01), the default, or
            ``"spg_code"`` (0.7, 0.05), the SPG authors' code.
        b1_thresholds: (delta_h, delta_l) for the sigmoid(B2) seed that supervises B1.
        b1_role, b2_role: backbone roles the branches attach to (Mixed_5d, after the pool that
            follows it without ``large_feature_map``, and Mixed_6d on Inception-V3).
        normalize_scores: min-max normalise sigmoid(B2) per image before taking B1's seed. Off by
            default, as in both reference codes: raw sigmoid scores keep a flat map flat. Early in
            training sigmoid(B2) can exceed 0.5 everywhere, which makes B1's seed all object (no
            background pixel); normalising always leaves background.
    """

    name = "spg_b"
    search_space = (
        Param("b2_thresholds", "pair", 0.0, 1.0, source=f"{BENCHMARK_SPACE}: delta_l uniform in [0, 1], delta_h in [delta_l, 1]"),
        Param("b1_thresholds", "pair", 0.0, 1.0, source=f"{BENCHMARK_SPACE}: delta_l uniform in [0, 1], delta_h in [delta_l, 1]"),
    )

    def __init__(
        self,
        spec: ModelSpec,
        *,
        shared: bool = True,
        width: int = 512,
        b2_thresholds: str | tuple[float, float] = "wsol_benchmark",
        b1_thresholds: tuple[float, float] = (0.5, 0.05),
        b1_role: str = "mid",
        b2_role: str = "late",
        normalize_scores: bool = False,
    ):
        super().__init__(spec)
        width = check_int(self.name, "width", width)
        self.shared = shared
        self.normalize_scores = normalize_scores
        self.b1_role, self.b2_role = b1_role, b2_role
        self.b2_thresholds = _thresholds(self.name, "b2_thresholds", b2_thresholds, presets=True)
        self.b1_thresholds = _thresholds(self.name, "b1_thresholds", b1_thresholds)
        self.b1_first = _conv_relu(spec.stage(b1_role).channels, width)
        self.b2_first = _conv_relu(spec.stage(b2_role).channels, width)
        self.b1_second, self.b1_out = _conv_relu(width, width), nn.Conv2d(width, 1, 1)
        if shared:
            self.b2_second, self.b2_out = self.b1_second, self.b1_out
        else:
            self.b2_second, self.b2_out = _conv_relu(width, width), nn.Conv2d(width, 1, 1)
        xavier_init(self)

    def forward(self, ctx: HeadContext) -> HeadOutput:
        if ctx.labels is None:  # B only guides training; nothing to compute at inference
            return HeadOutput()
        size = ctx.image_size
        b1 = upsample(self.b1_out(self.b1_second(self.b1_first(ctx.features[self.b1_role]))), size)
        b2 = upsample(self.b2_out(self.b2_second(self.b2_first(ctx.features[self.b2_role]))), size)
        prob1, prob2 = torch.sigmoid(b1.detach())[:, 0], torch.sigmoid(b2.detach())[:, 0]
        cam = minmax_normalize(upsample(class_maps(ctx.classifier.cams.detach(), ctx.labels), size), flat=float("nan"))
        score_b1 = minmax_normalize(prob2) if self.normalize_scores else prob2
        seed_b2, seed_b1 = seed_mask(cam, *self.b2_thresholds), seed_mask(score_b1, *self.b1_thresholds)
        fused = (prob1 + prob2) / 2
        losses = {"b1": masked_bce(b1, seed_b1), "b2": masked_bce(b2, seed_b2)}
        visuals = {"b2": prob2, "seed b2": seed_b2, "b1": prob1, "seed b1": seed_b1}
        stats = {**seed_stats("seed_b2", seed_b2, cam), **seed_stats("seed_b1", seed_b1, score_b1)}
        return HeadOutput(losses=losses, exports={"fused": fused}, visuals=visuals, stats=stats)


class SPGC(GuidanceHead):
    """SPG-C: a pixel-level branch on the classifier's A3 features, supervised by SPG-B.

    Args:
        spec: model spec (classifier channels).
        width: filters of the 3x3 convs (512 in the paper).
        depth: number of 3x3 conv + ReLU layers before the 1x1 output conv: 1 in both public codes
            (the default); 2 is a reading of the paper's figure.
        thresholds: (delta_h, delta_l) for the seed of SPG-B's fused map.
        normalize_scores: min-max normalise the fused map per image before taking the seed (see
            :class:`SPGB`).
        feedback: let C's loss flow back into the classifier's A3 features and the trunk, as in
            both reference codes (the default). False detaches C's input: C still learns its map,
            but leaves the trunk alone (an ablation of C's pixel-level feedback).
    """

    name = "spg_c"
    search_space = (Param("thresholds", "pair", 0.0, 1.0, source=f"{BENCHMARK_SPACE}: delta_l uniform in [0, 1], delta_h in [delta_l, 1]"),)
    needs_heads = ("spg_b",)

    def __init__(
        self,
        spec: ModelSpec,
        *,
        width: int = 512,
        depth: int = 1,
        thresholds: tuple[float, float] = (0.7, 0.1),
        normalize_scores: bool = False,
        feedback: bool = True,
    ):
        super().__init__(spec)
        self.feedback = feedback
        width = check_int(self.name, "width", width)
        depth = check_int(self.name, "depth", depth)
        self.thresholds = _thresholds(self.name, "thresholds", thresholds)
        self.normalize_scores = normalize_scores
        convs = [_conv_relu(spec.classifier_channels if i == 0 else width, width) for i in range(depth)]
        self.layers = nn.Sequential(*convs, nn.Conv2d(width, 1, 1))
        xavier_init(self)

    def forward(self, ctx: HeadContext) -> HeadOutput:
        if ctx.labels is None:
            return HeadOutput()
        features = ctx.classifier.features if self.feedback else ctx.classifier.features.detach()
        logits = upsample(self.layers(features), ctx.image_size)
        fused = ctx.outputs["spg_b"].exports["fused"]
        score = minmax_normalize(fused) if self.normalize_scores else fused
        seed = seed_mask(score, *self.thresholds)
        visuals = {"fused b": fused, "seed c": seed, "c": torch.sigmoid(logits.detach())[:, 0]}
        return HeadOutput(losses={"c": masked_bce(logits, seed)}, visuals=visuals, stats=seed_stats("seed_c", seed, score))


@spgkit.hookimpl
def spgkit_register_heads(register):
    """SPG-B and SPG-C."""
    register(SPGB)
    register(SPGC)
