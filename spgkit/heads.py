"""The plugin contract for guidance heads.

A head is an ``nn.Module`` subclass of :class:`GuidanceHead`. It takes the :class:`ModelSpec` and
its hyperparameters (constructor arguments with the published defaults), asks the spec for the
backbone roles it reads, and turns a :class:`HeadContext` into a :class:`HeadOutput`: losses to add
to the classification loss, optionally a map to fuse into the localization map, tensors later
heads read (``exports``) and maps or masks figures may draw (``visuals``). How much its losses
weigh is the arm's choice (``HeadSpec(name, args, weight=...)``), not the head's. A minimal head::

    class Entropy(GuidanceHead):
        name = "entropy"

        def forward(self, ctx):
            if ctx.labels is None:
                return HeadOutput()
            p = ctx.classifier.cams.flatten(2).softmax(-1)
            return HeadOutput(losses={"entropy": -(p * p.log()).sum(-1).mean()})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

from spgkit.backbones import StageInfo


class MissingRole(ValueError):
    """A head asked for a backbone role the backbone does not provide."""


@dataclass(frozen=True)
class ModelSpec:
    """What a head may size itself by when it is built."""

    stages: dict[str, StageInfo]  #: backbone roles -> channels/stride
    num_classes: int
    classifier_channels: int  #: channels of the classifier's A3 features

    def stage(self, role: str) -> StageInfo:
        """The backbone stage of ``role``; :class:`MissingRole` names the roles there are."""
        if role not in self.stages:
            raise MissingRole(f"needs backbone role {role!r}, which this backbone does not provide (it has {sorted(self.stages)})")
        return self.stages[role]


@dataclass
class ClassifierOutput:
    """SPG-A's output: A3 features, class activation maps (A4) and logits = GAP(CAMs)."""

    features: torch.Tensor  #: (N, C, h, w) A3 output
    cams: torch.Tensor  #: (N, K, h, w)
    logits: torch.Tensor  #: (N, K)


@dataclass
class HeadOutput:
    """What a head returns.

    Attributes:
        losses: named scalar losses; the model adds each, times the head's weight in the arm.
        map: optional (N, K, h, w) class maps or (N, 1, h, w) class-agnostic map that is fused into
            the localization map by element-wise max after per-image min-max normalisation.
        exports: tensors later heads read through ``ctx.outputs[name].exports`` (SPG-B's fused map
            that SPG-C learns from).
        visuals: (N, h, w) maps in [0, 1] (float) or seed masks (uint8: 0 background, 1 object,
            255 ignored) that figures may draw, by name (any resolution: figures stretch them).
        stats: scalars to watch in training, by name (SPG: each seed's shares of object,
            background and ignored pixels); ``log.csv`` records their mean over each epoch as
            ``<head>.<name>``. None of exports, visuals and stats enters a loss.
    """

    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    map: torch.Tensor | None = None
    exports: dict[str, torch.Tensor] = field(default_factory=dict)
    visuals: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class HeadContext:
    """Everything a head may read during one forward pass."""

    images: torch.Tensor  #: (N, 3, H, W) network input
    features: dict[str, torch.Tensor]  #: backbone features by role
    classifier: ClassifierOutput
    labels: torch.Tensor | None  #: (N,) ground truth for the losses; None when none are wanted
    #: the classification targets after the heads' batch transforms: ``labels``, or (N, K) class
    #: probabilities where a head mixed images (CutMix); None without labels
    targets: torch.Tensor | None
    classes: torch.Tensor  #: (N,) the class to localize: ground truth where known, else top-1
    outputs: dict[str, HeadOutput]  #: outputs of the heads run so far, by head name

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])


class GuidanceHead(nn.Module):
    """Base class of every guidance head.

    Attributes:
        name: the registry name studies use.
        needs_heads: names of heads whose outputs it reads; the model runs those first, and a
            study that omits one fails when it is checked, before anything trains.
        classifier_dropout: the dropout of the CAM classifier in the head's reference model, used
            when the study does not set one (ACoL: 0, the WSOL benchmark's ACoL model has none);
            None leaves the library default (0.5).

    Constructor: ``__init__(self, spec: ModelSpec, **hyperparameters)``; it reads the backbone roles
    it needs with ``spec.stage(role)``, so a backbone without them is refused when the model is
    built.
    """

    name: ClassVar[str] = ""
    needs_heads: ClassVar[tuple[str, ...]] = ()
    classifier_dropout: ClassVar[float | None] = None

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec

    def transform_batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Change a training batch before the backbone sees it: the images (Hide-and-Seek hides
        patches) and the classification targets with them (CutMix pastes a region of another image
        and mixes the two labels). ``targets`` are (N,) class indices or (N, K) class
        probabilities; the classification loss is the cross-entropy against what the last head
        returns. Called in training only, when labels are given. Default: unchanged."""
        return images, targets

    def feature_transforms(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        """Functions that change the output of modules inside the model, in training only, keyed
        by the module's path in :class:`~spgkit.model.WSOLModel` (``"backbone.Mixed_6e"``,
        ``"classifier.a3"``: the classifier's A3 features before A4). Later layers see the changed
        output; attention-based dropout acts this way between the backbone's blocks. A path the
        model lacks is refused when the model is built. Default: none."""
        return {}

    def forward(self, ctx: HeadContext) -> HeadOutput:
        """Losses, a map to fuse, exports and visuals for one batch. Default: nothing (a head may
        act only through the transforms above)."""
        return HeadOutput()
