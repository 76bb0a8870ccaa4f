"""The plugin contract for guidance heads.

A head is an ``nn.Module`` subclass of :class:`GuidanceHead`. It takes the :class:`ModelSpec` and
its hyperparameters (constructor arguments with the published defaults), asks the spec for the
backbone roles it reads, and turns a :class:`HeadContext` into a :class:`HeadOutput`: losses to add
to the classification loss, optionally a map to fuse into the localization map, tensors later
heads read (``exports``) and maps or masks figures may draw (``visuals``). How much its losses
weigh is the arm's choice (``HeadSpec(name, args, weight=...)``), not the head's. Beyond the
backbone's stage features a head may declare what else it reads of the backbone
(:attr:`GuidanceHead.needs_backbone`: a vision transformer's class token, each block's attention),
how its map combines with the CAM (:attr:`GuidanceHead.map_mode`) and the CAM classifier its
method has (:attr:`GuidanceHead.classifier_form`). A minimal head::

    class Entropy(GuidanceHead):
        name = "entropy"

        def forward(self, ctx):
            if ctx.labels is None:
                return HeadOutput()
            p = ctx.classifier.cams.flatten(2).softmax(-1)
            return HeadOutput(losses={"entropy": -(p * p.log()).sum(-1).mean()})
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from spgkit.backbones import StageInfo
from spgkit.config import Param


class MissingRole(ValueError):
    """A head asked for a backbone role the backbone does not provide."""


#: What a head may read of the backbone beyond its stage features (:attr:`GuidanceHead.needs_backbone`).
BACKBONE_EXTRAS = ("class_token", "attention")
#: How a head's map combines with the localization map so far (:attr:`GuidanceHead.map_mode`).
MAP_MODES = ("max", "multiply", "replace")
#: The CAM classifiers a head's method may ask for (:attr:`GuidanceHead.classifier_form`).
CLASSIFIERS = ("spg", "conv3x3")


def check_int(head: str, arg: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum``; else a one-line TypeError or ValueError naming
    the head and the argument (``head 'spg_b': width must be at least 1, not -3``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"head {head!r}: {arg} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"head {head!r}: {arg} must be at least {minimum}, not {value}")
    return int(value)


def check_number(head: str, arg: str, value: Any, low: float | None = None, high: float | None = None, high_open: bool = False) -> float:
    """``value`` as a finite float in ``[low, high]`` (``[low, high)`` with ``high_open``; an open
    end where None); else a one-line TypeError or ValueError naming the head and the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"head {head!r}: {arg} must be a number, not {value!r}")
    value = float(value)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or (low is not None and value < low) or too_high:
        if low is not None and high is not None:
            where = f"in [{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            where = f"finite and at least {low:g}"
        else:
            where = "finite" if high is None else f"finite and at most {high:g}"
        raise ValueError(f"head {head!r}: {arg} must be {where}, not {value}")
    return value


def check_thresholds(head: str, arg: str, value: Any) -> tuple[float, float]:
    """A seed's ``(delta_h, delta_l)``: two numbers in [0, 1] with ``delta_h >= delta_l`` (pixels
    above delta_h are object, below delta_l background); else a one-line ValueError or TypeError
    naming the head, the argument and both values."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(f"head {head!r}: {arg} must be a pair (delta_h, delta_l), not {value!r}")
    high = check_number(head, f"{arg} delta_h", value[0], 0.0, 1.0)
    low = check_number(head, f"{arg} delta_l", value[1], 0.0, 1.0)
    if high < low:
        raise ValueError(
            f"head {head!r}: {arg} (delta_h, delta_l) = ({high:g}, {low:g}): delta_h {high:g} is below "
            f"delta_l {low:g}; object pixels are those above delta_h, background those below delta_l"
        )
    return high, low


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
        map: optional (N, K, h, w) class maps or (N, 1, h, w) class-agnostic map, combined with the
            localization map as the head's :attr:`~GuidanceHead.map_mode` says (by default the
            element-wise max after per-image min-max normalisation).
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
    #: (N, C) the class token after the backbone's last block (through its final norm where the
    #: backbone applies one); None unless a head of the model declares ``"class_token"``
    class_token: torch.Tensor | None = None
    #: each block's attention weights, first block first, each (N, heads, T, T) after the softmax
    #: and before attention dropout, token 0 the class token; None unless a head declares ``"attention"``
    attention: tuple[torch.Tensor, ...] | None = None

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
        needs_backbone: what else the head reads of the backbone (:data:`BACKBONE_EXTRAS`):
            ``"class_token"`` fills :attr:`HeadContext.class_token`, ``"attention"``
            :attr:`HeadContext.attention`. A backbone that cannot give them (a CNN, a
            transformer without a class token) is refused when the model is built; a timm
            vision transformer with a class token gives both, read through hooks
            on the modules timm's ``AttentionExtract`` reads (see
            :class:`~spgkit.backbones.TimmBackbone`).
        map_mode: how the head's map combines with the localization map so far (the CAM of the
            localized class, then each earlier head's map in turn; :data:`MAP_MODES`):
            ``"max"`` (the default, ACoL's fusion) the element-wise max of the two after per-image
            min-max normalisation; ``"multiply"`` the product of the two as they are, not
            normalised (TS-CAM couples attention to the CAM this way); ``"replace"`` the head's
            map alone. A head map of another size than the CAM's is resized to it first (bilinear).
        classifier_form: the CAM classifier of the head's reference model (:data:`CLASSIFIERS`):
            ``"spg"`` SPG-A's A3 + A4 (the library's, also what None means), ``"conv3x3"`` one 3x3
            convolution straight to the classes (TS-CAM's head on a transformer's patch tokens).
        search_space: the hyperparameters ``spgkit tune`` searches by default, as
            :class:`~spgkit.config.Param` s whose ``path`` is the constructor argument's name, each
            with its ``source`` (the learning rate is searched for every arm:
            :func:`spgkit.tune.default_space`).

    Constructor: ``__init__(self, spec: ModelSpec, **hyperparameters)``; it reads the backbone roles
    it needs with ``spec.stage(role)``, so a backbone without them is refused when the model is
    built. It refuses a bad hyperparameter with a ValueError or TypeError whose message names the
    head and the argument (:func:`check_int`, :func:`check_number`, :func:`check_thresholds`);
    :func:`spgkit.model.build_model` passes those on as argument errors and reports anything else
    the constructor raises as a :class:`spgkit.plugins.HeadError` (a bug in the head).

    What the model checks of a head at run time (each failure a ``HeadError`` naming the head, its
    plugin and the method): ``forward`` returns a :class:`HeadOutput`; its ``map`` is (N, K, h, w)
    with K the number of classes, or (N, 1, h, w); every loss is a 0-d floating-point tensor and
    every stat a 0-d tensor; ``transform_batch`` returns ``(images, targets)``, two tensors of the
    batch's size; ``feature_transforms`` returns a dict of callables.

    Heads run in training and at evaluation alike (``self.training`` tells them apart): a method
    that acts only at evaluation (TS-CAM's attention coupling) returns its map only there.
    """

    name: ClassVar[str] = ""
    needs_heads: ClassVar[tuple[str, ...]] = ()
    classifier_dropout: ClassVar[float | None] = None
    needs_backbone: ClassVar[tuple[str, ...]] = ()
    map_mode: ClassVar[str] = "max"
    classifier_form: ClassVar[str | None] = None
    search_space: ClassVar[tuple[Param, ...]] = ()

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
