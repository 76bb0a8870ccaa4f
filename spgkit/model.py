"""Backbone + CAM classifier (SPG-A) + guidance heads, composed into one model."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from spgkit.backbones import AttentionBackbone
from spgkit.guidance import class_maps, minmax_normalize, upsample
from spgkit.config import HeadSpec
from spgkit.heads import ClassifierOutput, GuidanceHead, HeadContext, HeadOutput, MissingRole, ModelSpec
from spgkit.init import xavier_init
from spgkit.plugins import PluginError, Registry


class Classifier(nn.Module):
    """SPG-A's A3 + A4: two 3x3 convs (``width`` filters, ReLU) then a 1x1 conv to K classes.

    Dropout acts where the WSOL benchmark's Inception-V3 CAM/SPG model has it: on the input
    features, after the first A3 conv and after the second; ``dropout=0`` removes all three (the
    benchmark's ACoL classifiers have none). The A4 maps are the class activation maps; global
    average pooling gives the logits. Every conv starts Xavier-uniform with zero bias, as in both
    reference codes.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 1024, dropout: float = 0.5):
        super().__init__()

        def drop() -> nn.Module:
            return nn.Dropout(dropout) if dropout else nn.Identity()

        self.a3 = nn.Sequential(
            drop(),
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            drop(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            drop(),
        )
        self.a4 = nn.Conv2d(width, num_classes, 1)
        self.width = width
        xavier_init(self)

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        features = self.a3(x)
        cams = self.a4(features)
        return ClassifierOutput(features, cams, cams.mean((2, 3)))


@dataclass
class ModelOutput:
    """One forward pass: the classifier's output and every head's output by name."""

    classifier: ClassifierOutput
    heads: dict[str, HeadOutput]
    #: the classification targets after the heads' batch transforms (None without labels)
    targets: torch.Tensor | None = None

    @property
    def logits(self) -> torch.Tensor:
        return self.classifier.logits


def order_heads(heads: Mapping[str, type[GuidanceHead]]) -> list[str]:
    """Order head names so that each comes after the heads it needs.

    Raises :class:`ValueError` for a need that is not among ``heads`` or for a cycle.
    """
    for name, cls in heads.items():
        for need in cls.needs_heads:
            if need not in heads:
                raise ValueError(
                    f"head {name!r} needs head {need!r}, which is not in this model; "
                    f"add HeadSpec({need!r}) beside it"
                )
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ValueError(f"heads need each other in a cycle through {name!r}")
        visiting.add(name)
        for need in heads[name].needs_heads:
            visit(need)
        visiting.discard(name)
        order.append(name)

    for name in heads:
        visit(name)
    return order


class WSOLModel(nn.Module):
    """The attention backbone, the CAM classifier on its ``high`` stage, and ordered heads."""

    def __init__(
        self, backbone: AttentionBackbone, classifier: Classifier, heads: list[GuidanceHead], weights: Mapping[str, float] | None = None
    ):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.heads = nn.ModuleDict({head.name: head for head in heads})
        self.weights = {head.name: float((weights or {}).get(head.name, 1.0)) for head in heads}  #: each head's loss weight
        for head in heads:
            for path, transform in head.feature_transforms().items():
                try:
                    module = self.get_submodule(path)
                except AttributeError:
                    raise ValueError(
                        f"head {head.name!r} transforms the output of {path!r}, which this model does not have "
                        f"(its stages: {_stage_paths(backbone)}; the classifier's A3: classifier.a3)"
                    ) from None
                module.register_forward_hook(_TrainingTransform(transform))

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, classes: torch.Tensor | None = None
    ) -> ModelOutput:
        """Backbone, classifier, then each head in dependency order. In training with labels, heads
        first transform the batch (images and targets); in training, their feature transforms act
        inside the backbone and classifier.

        ``labels`` are the ground truth the heads' losses need (training). ``classes`` are the
        classes to localize without computing losses: the WSOL benchmark evaluates with the
        ground-truth class (ACoL then erases that class's region). Without either, heads work
        from the top-1 prediction, as at inference on unlabelled images.
        """
        targets = labels
        if self.training and labels is not None:
            for head in self.heads.values():
                images, targets = head.transform_batch(images, targets)
        features = self.backbone(images)
        cls_out = self.classifier(features["high"])
        if classes is None:
            classes = labels if labels is not None else cls_out.logits.argmax(1)
        ctx = HeadContext(images, features, cls_out, labels, targets, classes, outputs={})
        for name, head in self.heads.items():
            ctx.outputs[name] = head(ctx)
        return ModelOutput(cls_out, ctx.outputs, targets)

    def losses(self, out: ModelOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every loss term by name (``ce`` and ``<head>.<loss>``, already weighted). The
        cross-entropy is against the targets the heads' batch transforms left (mixed labels under
        CutMix: the weighted sum of the two labels' cross-entropies), else against ``labels``."""
        targets = out.targets if out.targets is not None else labels
        terms = {"ce": F.cross_entropy(out.logits, targets)}
        for name, head_out in out.heads.items():
            weight = self.weights[name]
            for key, value in head_out.losses.items():
                terms[f"{name}.{key}"] = weight * value
        return terms

    @staticmethod
    def stats(out: ModelOutput) -> dict[str, torch.Tensor]:
        """Every head's training statistics by name (``<head>.<stat>``)."""
        return {f"{name}.{key}": value for name, head_out in out.heads.items() for key, value in head_out.stats.items()}

    def localization_maps(self, out: ModelOutput, classes: torch.Tensor) -> torch.Tensor:
        """(N, h, w) maps at feature resolution for the given classes: the raw CAM when no head
        contributes a map; otherwise the element-wise max of the min-max normalised CAM and the
        normalised maps the heads contribute (ACoL's second classifier), as ACoL computes it.
        Evaluation resizes and normalises these maps (see :mod:`spgkit.localization.maps`)."""
        cam = class_maps(out.classifier.cams, classes)
        extras = [head_out.map for head_out in out.heads.values() if head_out.map is not None]
        if not extras:
            return cam
        fused = minmax_normalize(cam)
        for extra in extras:
            extra = class_maps(extra, classes) if extra.shape[1] > 1 else extra[:, 0]
            extra = minmax_normalize(upsample(extra, tuple(fused.shape[-2:])))
            fused = torch.maximum(fused, extra)
        return fused

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"pretrained": backbone parameters, "new": classifier and head parameters}``."""
        backbone = list(self.backbone.parameters())
        seen = {id(p) for p in backbone}
        return {"pretrained": backbone, "new": [p for p in self.parameters() if id(p) not in seen]}


def _stage_paths(backbone: AttentionBackbone) -> str:
    """Each role's module as a path in the model (``mid: backbone.net.layer2``), for messages."""
    names = [name for name, _ in backbone.named_modules()]
    paths = []
    for role, info in backbone.stages.items():
        found = next((n for n in names if n == info.module or n.endswith("." + info.module)), None)
        if found is not None:
            paths.append(f"{role}: backbone.{found}")
    return ", ".join(paths)


class _TrainingTransform:
    """A forward hook that replaces a module's output by ``transform(output)`` in training (a
    returned None keeps the output). An object, not a closure, so that a copy of the model
    (``copy.deepcopy``, an EMA model) runs its own heads' transforms."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, module, args, output):
        return self.transform(output) if module.training else None


def build_model(
    num_classes: int,
    heads: list[HeadSpec] | tuple[HeadSpec, ...] = (),
    backbone: str = "inception_v3",
    backbone_args: Mapping[str, Any] | None = None,
    classifier_width: int = 1024,
    dropout: float | None = None,
    registry: Registry | None = None,
) -> WSOLModel:
    """Build a model from registry names; every composition error is raised here, naming the head
    or backbone at fault.

    ``dropout`` is the CAM classifier's; ``None`` takes the heads' reference value
    (:attr:`GuidanceHead.classifier_dropout`: 0 with ACoL), else 0.5. Each :class:`HeadSpec`'s
    ``weight`` scales that head's losses.
    """
    registry = registry if registry is not None else Registry()
    names = [spec.name for spec in heads]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"head(s) {duplicates} listed more than once")
    head_classes = {spec.name: registry.head(spec.name) for spec in heads}
    args = {spec.name: dict(spec.args) for spec in heads}
    for name, cls in head_classes.items():
        check_arguments(cls, args[name], f"head {name!r}", skip=1)
    order = order_heads(head_classes)
    if dropout is None:
        dropout = classifier_dropout(head_classes)
    net = registry.backbone(backbone)(**dict(backbone_args or {}))
    if "high" not in net.stages:
        raise PluginError(f"backbone {backbone!r} has no 'high' stage (roles: {sorted(net.stages)})")
    spec = ModelSpec(dict(net.stages), num_classes, classifier_width)
    classifier = Classifier(net.stages["high"].channels, num_classes, classifier_width, dropout)
    built = []
    for name in order:
        try:
            built.append(head_classes[name](spec, **args[name]))
        except MissingRole as exc:
            raise ValueError(f"head {name!r} {exc}; backbone {backbone!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"head {name!r}: {exc}") from exc
    return WSOLModel(net, classifier, built, {s.name: s.weight for s in heads})


def check_arguments(target: Any, args: Mapping[str, Any], what: str, skip: int = 0) -> None:
    """Bind ``args`` by keyword to the signature of ``target`` (its first ``skip`` positional
    parameters given); a TypeError names ``what``, the argument, and the accepted ones."""
    signature = inspect.signature(target)
    params = list(signature.parameters.values())
    try:
        signature.bind(*([None] * skip), **args)
    except TypeError as exc:
        accepted = [p.name for p in params[skip:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        raise TypeError(f"{what}: {exc}; it takes {', '.join(accepted) or 'no arguments'}") from None


def classifier_dropout(heads: Mapping[str, type[GuidanceHead]]) -> float:
    """The CAM classifier's dropout that the heads' reference models use: 0.5 unless a head says
    otherwise; heads that disagree need an explicit choice."""
    wanted = {name: cls.classifier_dropout for name, cls in heads.items() if cls.classifier_dropout is not None}
    if len(set(wanted.values())) > 1:
        raise ValueError(f"heads disagree on the classifier's dropout {wanted}; set the dropout explicitly")
    return next(iter(wanted.values()), 0.5)
