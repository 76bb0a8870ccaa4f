"""Backbone + CAM classifier (SPG-A) + guidance heads, composed into one model."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from spgkit.backbones import AttentionBackbone
from spgkit.guidance import class_maps
from spgkit.localization.maps import minmax_normalize, upsample
from spgkit.config import HeadSpec
from spgkit.heads import BACKBONE_EXTRAS, CLASSIFIERS, MAP_MODES, ClassifierOutput, GuidanceHead, HeadContext, HeadOutput, MissingRole, ModelSpec
from spgkit.init import xavier_init
from spgkit.plugins import BackboneError, HeadError, PluginError, Registry, check_arguments, one_line

#: Errors that pass out of a head's or a backbone's code unwrapped: already attributed, or not the
#: plugin's fault (memory). KeyboardInterrupt and SystemExit are no Exception and pass anyway.
_PASS_THROUGH = (PluginError, MemoryError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))


class Classifier(nn.Module):
    """SPG-A's A3 + A4: two 3x3 convs (``width`` filters, ReLU) then a 1x1 conv to K classes.

    Dropout acts where the WSOL benchmark's Inception-V3 CAM/SPG model has it: on the input
    features, after the first A3 conv and after the second; ``dropout=0`` removes all three (the
    benchmark's ACoL classifiers have none). The A4 maps are the class activation maps; global
    average pooling gives the logits. Every conv starts Xavier-uniform with zero bias, as in both
    reference codes.

    ``form="conv3x3"`` is TS-CAM's head instead: no A3 (``a3`` passes the input on, through
    dropout where ``dropout`` is set), and A4 one 3x3 convolution (padding 1) to the classes, at
    PyTorch's default initialisation, as TS-CAM leaves it; ``width`` is unused.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 1024, dropout: float = 0.5, form: str = "spg"):
        super().__init__()

        def drop() -> nn.Module:
            return nn.Dropout(dropout) if dropout else nn.Identity()

        if form == "conv3x3":
            self.a3 = drop()
            self.a4 = nn.Conv2d(in_channels, num_classes, 3, padding=1)
            self.width = in_channels
            return
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
    """The attention backbone, the CAM classifier on its ``high`` stage, and ordered heads.

    Every call into a head's code is guarded: an exception it raises, or an output the head
    contract (:mod:`spgkit.heads`) does not allow, is a :class:`~spgkit.plugins.HeadError` naming
    the head, the plugin that registered it (``plugins``: head name -> plugin, as the registry
    knows it; default the head's module) and the method. A backbone's forward pass that fails with
    anything but a RuntimeError or AssertionError (what torch and timm raise for an input too small
    for the network) is a :class:`~spgkit.plugins.BackboneError`.
    """

    def __init__(
        self,
        backbone: AttentionBackbone,
        classifier: Classifier,
        heads: list[GuidanceHead],
        weights: Mapping[str, float] | None = None,
        plugins: Mapping[str, str] | None = None,
        backbone_plugin: str | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.heads = nn.ModuleDict({head.name: head for head in heads})
        self.weights = {head.name: float((weights or {}).get(head.name, 1.0)) for head in heads}  #: each head's loss weight
        #: the plugin that registered each head, for messages
        self.plugins = {head.name: (plugins or {}).get(head.name) or f"module {type(head).__module__}" for head in heads}
        self.backbone_plugin = backbone_plugin or f"module {type(backbone).__module__}"
        #: what the heads read of the backbone beyond its features
        self.extras = self._check_extras(backbone, heads)
        for head in heads:
            plugin = self.plugins[head.name]
            try:
                transforms = head.feature_transforms()
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                raise HeadError.wrap(head.name, plugin, "feature_transforms", exc) from exc
            if not isinstance(transforms, Mapping) or not all(isinstance(k, str) and callable(v) for k, v in transforms.items()):
                raise HeadError(
                    f"head {head.name!r} (plugin {plugin!r}): feature_transforms returned {_describe(transforms)}, "
                    "not a dict of module path -> callable",
                    head.name, plugin, "feature_transforms",
                )  # fmt: skip
            for path, transform in transforms.items():
                try:
                    module = self.get_submodule(path)
                except AttributeError:
                    raise ValueError(
                        f"head {head.name!r} transforms the output of {path!r}, which this model does not have "
                        f"(its stages: {_stage_paths(backbone)}; the classifier's A3: classifier.a3); plugin {plugin!r}"
                    ) from None
                module.register_forward_hook(_TrainingTransform(transform, head.name, plugin, path))

    def _check_extras(self, backbone: AttentionBackbone, heads: list[GuidanceHead]) -> frozenset[str]:
        """The union of the heads' ``needs_backbone``, once the backbone is found to give each and
        made ready to; else a ValueError naming the head, what it reads and the backbone."""
        offered = frozenset(getattr(backbone, "extras", frozenset()))
        for head in heads:
            missing = sorted(set(head.needs_backbone) - offered)
            if missing:
                raise ValueError(
                    f"head {head.name!r} reads the backbone's {' and '.join(missing)}, which backbone {self._backbone_name()!r} does not give "
                    f"(it gives {sorted(offered) or 'nothing more than its features'}); a timm vision transformer with a class "
                    f"token gives both (backbone 'timm:deit_small_patch16_224'); plugin {self.plugins[head.name]!r}"
                )
        wanted = frozenset(need for head in heads for need in head.needs_backbone)
        if wanted:
            backbone.prepare_extras(wanted)
        return wanted

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
        images, targets = self._transform_batch(images, labels) if self.training and labels is not None else (images, labels)
        try:
            features, extras = self.backbone.forward_extras(images, self.extras) if self.extras else (self.backbone(images), {})
        except (RuntimeError, AssertionError, *_PASS_THROUGH):  # too small an input; a head's feature transform (HeadError)
            raise
        except Exception as exc:
            raise BackboneError(f"backbone {self._backbone_name()!r} (plugin {self.backbone_plugin!r}) failed in forward: {one_line(exc)}") from exc
        if set(extras) != self.extras:  # a backbone plugin's forward_extras out of step with its extras
            raise BackboneError(
                f"backbone {self._backbone_name()!r} (plugin {self.backbone_plugin!r}) was asked for {sorted(self.extras)} "
                f"by the heads but its forward_extras gave {sorted(extras)}"
            )
        cls_out = self.classifier(features["high"])
        if classes is None:
            classes = labels if labels is not None else cls_out.logits.argmax(1)
        ctx = HeadContext(images, features, cls_out, labels, targets, classes, outputs={}, **extras)
        for name, head in self.heads.items():
            ctx.outputs[name] = self._run_head(name, head, ctx)
        return ModelOutput(cls_out, ctx.outputs, targets)

    def _backbone_name(self) -> str:
        return getattr(self.backbone, "name", "") or type(self.backbone).__name__

    def _transform_batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Each head's batch transform in turn (CutMix's mixing), its result checked.
        for name, head in self.heads.items():
            try:
                result = head.transform_batch(images, targets)
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                raise HeadError.wrap(name, self.plugins[name], "transform_batch", exc) from exc
            if not _is_batch(result, len(images)):
                what = f"returned {_describe(result)}; it must return (images, targets), two tensors of the batch's {len(images)} rows"
                raise self._contract(name, "transform_batch", what)
            images, targets = result
        return images, targets

    def _run_head(self, name: str, head: GuidanceHead, ctx: HeadContext) -> HeadOutput:
        # One head's forward, its output held to the contract.
        try:
            out = head(ctx)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            raise HeadError.wrap(name, self.plugins[name], "forward", exc) from exc
        if not isinstance(out, HeadOutput):
            raise self._contract(name, "forward", f"returned {_describe(out)}, not a HeadOutput")
        n, k = ctx.classifier.cams.shape[:2]
        if out.map is not None and not _is_map(out.map, n, k):
            what = f"returned as its map {_describe(out.map)}; a head's map is ({n}, {k}, h, w), one channel per class, or ({n}, 1, h, w)"
            raise self._contract(name, "forward", what)
        if not (isinstance(out.losses, dict) and isinstance(out.stats, dict)):
            what = f"returned losses {_describe(out.losses)} and stats {_describe(out.stats)}; both must be dicts"
            raise self._contract(name, "forward", what)
        return out

    def _contract(self, name: str, method: str, what: str) -> HeadError:
        """A HeadError for an output of head ``name``'s ``method`` that breaks the head contract."""
        plugin = self.plugins.get(name, "unknown")
        return HeadError(f"head {name!r} (plugin {plugin!r}): {method} {what}", name, plugin, method)

    def losses(self, out: ModelOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every loss term by name (``ce`` and ``<head>.<loss>``, already weighted). The
        cross-entropy is against the targets the heads' batch transforms left (mixed labels under
        CutMix: the weighted sum of the two labels' cross-entropies), else against ``labels``."""
        targets = out.targets if out.targets is not None else labels
        terms = {"ce": F.cross_entropy(out.logits, targets)}
        for name, head_out in out.heads.items():
            weight = self.weights[name]
            for key, value in head_out.losses.items():
                if not (isinstance(value, torch.Tensor) and value.ndim == 0 and value.is_floating_point()):
                    raise self._contract(
                        name, "forward", f"returned loss {key!r} as {_describe(value)}; a loss is a 0-d floating-point tensor (take .mean() or .sum())"
                    )
                terms[f"{name}.{key}"] = weight * value
        return terms

    def stats(self, out: ModelOutput) -> dict[str, torch.Tensor]:
        """Every head's training statistics by name (``<head>.<stat>``)."""
        stats = {}
        for name, head_out in out.heads.items():
            for key, value in head_out.stats.items():
                if not (isinstance(value, torch.Tensor) and value.ndim == 0):
                    raise self._contract(name, "forward", f"returned stat {key!r} as {_describe(value)}; a stat is a 0-d tensor")
                stats[f"{name}.{key}"] = value
        return stats

    def localization_maps(self, out: ModelOutput, classes: torch.Tensor) -> torch.Tensor:
        """(N, h, w) maps at feature resolution for the given classes: the raw CAM when no head
        contributes a map; otherwise the CAM combined with each head's map in turn (resized to
        the CAM's size), as the head's ``map_mode`` says: ``max``, the element-wise max of the two
        min-max normalised (ACoL's second classifier, as ACoL computes it); ``multiply``, their
        product as they are (TS-CAM's coupling); ``replace``, the head's map alone. Evaluation
        resizes and normalises these maps (see :mod:`spgkit.localization.maps`)."""
        fused = class_maps(out.classifier.cams, classes)
        normalised = False  # whether ``fused`` is already min-max normalised (after a max)
        for name, head_out in out.heads.items():
            extra = head_out.map
            if extra is None:
                continue
            extra = class_maps(extra, classes) if extra.shape[1] > 1 else extra[:, 0]
            extra = upsample(extra, tuple(fused.shape[-2:]))
            mode = self.heads[name].map_mode
            if mode == "max":
                fused = torch.maximum(fused if normalised else minmax_normalize(fused), minmax_normalize(extra))
            else:
                fused = fused * extra if mode == "multiply" else extra
            normalised = mode == "max"
        return fused

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"pretrained": backbone parameters, "new": classifier and head parameters}``."""
        backbone = list(self.backbone.parameters())
        seen = {id(p) for p in backbone}
        return {"pretrained": backbone, "new": [p for p in self.parameters() if id(p) not in seen]}


def _describe(value: Any) -> str:
    """A value for a message: a tensor's shape and dtype, else its type."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({str(value.dtype).removeprefix('torch.')})"
    return f"a {type(value).__name__}"


def _is_map(value: Any, n: int, k: int) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[0] == n and value.shape[1] in (1, k)


def _is_batch(result: Any, n: int) -> bool:
    return (
        isinstance(result, tuple) and len(result) == 2
        and all(isinstance(t, torch.Tensor) and t.ndim >= 1 and t.shape[0] == n for t in result)
    )  # fmt: skip


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
    (``copy.deepcopy``, an EMA model) runs its own heads' transforms. An error in the transform is
    a HeadError naming the head, its plugin and the module path."""

    def __init__(self, transform, head: str = "", plugin: str = "", path: str = ""):
        self.transform = transform
        self.head, self.plugin, self.path = head, plugin, path

    def __call__(self, module, args, output):
        if not module.training:
            return None
        try:
            return self.transform(output)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            raise HeadError.wrap(self.head, self.plugin, f"its feature transform of {self.path!r}", exc) from exc


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
    _check_model_arguments(num_classes, classifier_width, dropout)
    names = [spec.name for spec in heads]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"head(s) {duplicates} listed more than once")
    head_classes = {spec.name: registry.head(spec.name) for spec in heads}
    plugins = {spec.name: registry.head_plugin(spec.name) for spec in heads}
    args = {spec.name: dict(spec.args) for spec in heads}
    for name, cls in head_classes.items():
        try:
            check_arguments(cls, args[name], f"head {name!r}", skip=1)
        except TypeError as exc:
            raise TypeError(f"{exc} (head from plugin {plugins[name]!r})") from None
    for name, cls in head_classes.items():
        _check_declarations(name, cls, plugins[name])
    order = order_heads(head_classes)
    if dropout is None:
        dropout = classifier_dropout(head_classes)
    form = classifier_form(head_classes)
    net, backbone_plugin = _build_backbone(registry, backbone, backbone_args)
    classifier = Classifier(net.stages["high"].channels, num_classes, classifier_width, dropout, form)
    spec = ModelSpec(dict(net.stages), num_classes, classifier.width)
    built = [_build_head(head_classes[name], name, plugins[name], spec, args[name], backbone) for name in order]
    return WSOLModel(net, classifier, built, {s.name: s.weight for s in heads}, plugins, backbone_plugin)


def _check_declarations(name: str, cls: type[GuidanceHead], plugin: str) -> None:
    """A HeadError naming the head, its plugin and the attribute where a head declares a
    backbone extra, map mode or classifier the core does not know."""
    checks = (
        ("needs_backbone", cls.needs_backbone, BACKBONE_EXTRAS, isinstance(cls.needs_backbone, tuple) and set(cls.needs_backbone) <= set(BACKBONE_EXTRAS)),
        ("map_mode", cls.map_mode, MAP_MODES, cls.map_mode in MAP_MODES),
        ("classifier_form", cls.classifier_form, CLASSIFIERS, cls.classifier_form is None or cls.classifier_form in CLASSIFIERS),
    )
    for attribute, value, known, ok in checks:
        if not ok:
            what = f"a tuple of {', '.join(known)}" if attribute == "needs_backbone" else f"one of {', '.join(known)}"
            raise HeadError(f"head {name!r} (plugin {plugin!r}) declares {attribute} = {value!r}; it must be {what}", name, plugin, attribute)


def classifier_form(heads: Mapping[str, type[GuidanceHead]]) -> str:
    """The CAM classifier the heads' reference models have: SPG-A's (``"spg"``) unless a head
    says otherwise; heads that disagree cannot share one model."""
    wanted = {name: cls.classifier_form for name, cls in heads.items() if cls.classifier_form is not None}
    if len(set(wanted.values())) > 1:
        raise ValueError(f"heads disagree on the CAM classifier {wanted}; they cannot share one model")
    return next(iter(wanted.values()), "spg")


def _build_backbone(registry: Registry, backbone: str, backbone_args: Mapping[str, Any] | None) -> tuple[nn.Module, str]:
    """The registered backbone built with its arguments, checked to have stages and a ``high`` one;
    and the plugin that provided it."""
    factory, plugin = registry.backbone(backbone), registry.backbone_plugin(backbone)
    try:
        net = factory(**dict(backbone_args or {}))
    except (ValueError, TypeError, OSError, ImportError, *_PASS_THROUGH):  # bad arguments, a missing file or package
        raise
    except Exception as exc:
        raise BackboneError(f"backbone {backbone!r} (plugin {plugin!r}) could not be built: {one_line(exc)}") from exc
    stages = getattr(net, "stages", None)
    if not isinstance(net, nn.Module) or not isinstance(stages, Mapping):
        raise BackboneError(f"backbone {backbone!r} (plugin {plugin!r}) built {type(net).__name__}, not an AttentionBackbone with a dict of stages")
    if "high" not in stages:
        raise BackboneError(f"backbone {backbone!r} (plugin {plugin!r}) has no 'high' stage (roles: {sorted(stages)})")
    return net, plugin


def _build_head(cls: type[GuidanceHead], name: str, plugin: str, spec: ModelSpec, args: dict[str, Any], backbone: str) -> GuidanceHead:
    """One head built from its class and arguments; every failure names the head and its plugin."""
    try:
        head = cls(spec, **args)
    except MissingRole as exc:
        raise ValueError(f"head {name!r} {exc}; backbone {backbone!r} (head from plugin {plugin!r})") from None
    except (TypeError, ValueError) as exc:  # a bad argument, by the contract
        message = " ".join(str(exc).split())
        if not message.startswith(f"head {name!r}"):
            message = f"head {name!r}: {message}"
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(f"{message} (head from plugin {plugin!r})") from exc
    except _PASS_THROUGH:
        raise
    except Exception as exc:
        raise HeadError.wrap(name, plugin, "__init__", exc) from exc
    if not isinstance(head, GuidanceHead):
        raise HeadError(f"head {name!r} (plugin {plugin!r}) is a {type(head).__name__}, not a GuidanceHead", name, plugin, "__init__")
    return head


def _check_model_arguments(num_classes: Any, classifier_width: Any, dropout: Any) -> None:
    """The core's own model arguments: a TypeError or ValueError naming the one at fault."""
    for label, value in (("num_classes", num_classes), ("classifier_width", classifier_width)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"model: {label} must be an integer, not {value!r}")
        if value < 1:
            raise ValueError(f"model: {label} must be at least 1, not {value}")
    if dropout is not None:
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"model: dropout must be a number, not {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model: dropout must be in [0, 1), not {dropout}")


def classifier_dropout(heads: Mapping[str, type[GuidanceHead]]) -> float:
    """The CAM classifier's dropout that the heads' reference models use: 0.5 unless a head says
    otherwise; heads that disagree need an explicit choice."""
    wanted = {name: cls.classifier_dropout for name, cls in heads.items() if cls.classifier_dropout is not None}
    if len(set(wanted.values())) > 1:
        raise ValueError(f"heads disagree on the classifier's dropout {wanted}; set the dropout explicitly")
    return next(iter(wanted.values()), 0.5)
