"""The declarations of a study: frozen dataclasses, each field typed, documented and checked when
the object is built. This module imports nothing of spgkit (and no torch), so a study file loads in
an instant and every other module may import it.

A study file defines one module-level ``STUDY``::

    from spgkit import Arm, Data, HeadSpec, Study, Training

    STUDY = Study(
        name="my_study",
        data=Data("synthwsol", {"num_images": 2000}, image_size=64),
        arms=(Arm("cam"), Arm("spg", (HeadSpec("spg_b"), HeadSpec("spg_c")))),
        training=Training(epochs=10, batch_size=32),
        seeds=(0, 1),
    )

Names (datasets, backbones, heads) are checked against the plugin registry, and head arguments
against the heads' constructors, before anything trains (:func:`spgkit.study.check_study`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Callable

#: The evaluation protocols by name: how a map at feature resolution becomes boxes and pixel
#: scores. Their definitions are :class:`spgkit.localization.Protocol` objects, looked up by name
#: with :func:`spgkit.localization.get_protocol`.
PROTOCOLS = {
    "benchmark": "the WSOL benchmark's definitions end to end: the map resized with cv2.INTER_CUBIC, "
    "min-max normalised (NaN or flat maps become zeros), uint8 thresholds int(tau * max), OpenCV "
    "contours, +1 IoU, GT boxes resized by int() truncation, its PxAP",
    "float": "spgkit's float definitions: the map resized bilinearly, min-max normalised, foreground "
    "map >= tau on the float map, tight boxes of 8-connected regions, +1 IoU, PxAP over every recall step",
}


#: How images and masks are resized to the network's input: the data side of faithfulness.
RESIZES = {
    "benchmark": "the WSOL benchmark's: images by PIL's bilinear filter, masks by cv2.INTER_NEAREST",
    "torchvision": "torchvision's antialiased bilinear on uint8 tensors and its nearest neighbour for "
    "masks (spgkit's pipeline until 2026-12-02; on photos 0.5-3.4 % of pixel values differ from PIL's "
    "by 1/255)",
}


class ConfigError(ValueError):
    """A declaration with a wrong type or value; the message names the class and the field."""


# --------------------------------------------------------------------------- field checks


def _at_least(low: float) -> dict:
    return {"check": (lambda v: v >= low, f"at least {low:g}")}


def _positive() -> dict:
    return {"check": (lambda v: v > 0, "positive")}


#: The largest image side spgkit resizes to (a 4096 x 4096 float map is already 64 MiB).
MAX_IMAGE_SIZE = 4096

#: Names that become folders: one path component, not hidden (no ``/``, ``\``, control
#: characters, leading dot; so never ``.`` or ``..``).
NAME = re.compile(r"[^/\\\x00-\x1f.][^/\\\x00-\x1f]*")


def _folder_name() -> dict:
    return {"check": (lambda v: NAME.fullmatch(v) is not None, "a folder name (no '/', no leading '.')")}


def _one_of(*choices: str) -> dict:
    return {"check": (lambda v: v in choices, f"one of {', '.join(map(repr, choices))}")}


def type_name(hint: Any) -> str:
    """A declared type as an error message says it: ``int``, ``tuple of Arm``, ``float | None``."""
    if typing.get_origin(hint) is tuple:
        return f"tuple of {type_name(typing.get_args(hint)[0])}"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the type ``hint`` (the few kinds declarations use)."""
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, p) for p in params)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if origin is tuple:
        return isinstance(value, tuple) and all(conforms(v, params[0]) for v in value)
    if origin is Mapping or hint is Mapping:
        return isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def check_fields(obj: Any, where: str) -> None:
    """Check every field of the dataclass ``obj`` against its type and its ``check`` metadata;
    ConfigError names ``where`` and the field."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not conforms(value, hints[f.name]):
            raise ConfigError(f"{where}.{f.name} must be {type_name(hints[f.name])}, not {value!r}")
        test: tuple[Callable[[Any], bool], str] | None = f.metadata.get("check")
        if test is not None and value is not None and not test[0](value):
            raise ConfigError(f"{where}.{f.name} must be {test[1]}, not {value!r}")


class _Checked:
    """Dataclasses that check their fields when built."""

    def __post_init__(self) -> None:
        check_fields(self, type(self).__name__)


# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class HeadSpec(_Checked):
    """A guidance head in an arm: its registry name, its constructor arguments, and the weight of
    its losses in the total loss (1 in the published methods)."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    weight: float = field(default=1.0, metadata=_at_least(0))


@dataclass(frozen=True)
class LocalData:
    """A dataset folder found when the study runs, not when it is declared.

    Looked up in order: the environment variable ``env`` (a folder); the shared archive
    ``archive`` (under ``$SPGKIT_SHARED_DATA``, default ``<repo>/../shared/data``) extracted once
    into ``$SPGKIT_CACHE`` (default ``~/.cache/spgkit``). Where neither exists, the error shows
    ``instructions``: what to download and where to point ``env``.
    """

    env: str
    archive: str
    folder: str
    instructions: str


@dataclass(frozen=True)
class Data(_Checked):
    """Where the images come from.

    Attributes:
        name: a registered dataset (``synthwsol``, ``cub``, ``tiny_imagenet``, ...; ``spgkit
            datasets`` lists them).
        args: constructor arguments of that reader shared by every split (``root``, ...); a
            :class:`LocalData` value is resolved to a folder when the study runs.
        image_size: training crop and evaluation resize.
        train_split: split the model learns from.
        select_split: split on which the CAM threshold is chosen (the benchmark's held-out
            ``train-fullsup``); ``None`` carves ``holdout`` images out of ``train_split`` instead.
        test_split: split reported in the results table; never used for any choice.
        holdout: images carved out of the training split when ``select_split`` is ``None``.
        select_per_class: the WSOL benchmark's few-shot selection set (its ``train-fullsup``: 10
            images per class for ImageNet, 5 for CUB and OpenImages): this many images of every
            class, drawn by a fixed permutation, from ``select_split``, or carved out of
            ``train_split`` when that is ``None`` (instead of ``holdout``). They choose the CAM
            threshold and, in :func:`spgkit.tune.tune`, the hyperparameters. 0: not used.
        max_train, max_eval: cap the number of images used (0 = all); for quick runs. ``max_eval``
            caps the selection set only when ``select_per_class`` is 0.
        resize: how images and masks are resized, one of :data:`RESIZES`: ``"benchmark"`` (its
            PIL and OpenCV calls) or ``"torchvision"``.
        select_on_test: allow ``select_split`` to be the test split. Choosing the CAM threshold on
            the images it is then scored on is what the WSOL benchmark shows inflates every
            method, so it is refused unless set, and a table made so says it on its first line.
    """

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    image_size: int = field(default=224, metadata=_positive())
    train_split: str = "train"
    select_split: str | None = "val"
    test_split: str = "test"
    holdout: int = field(default=0, metadata=_at_least(0))
    select_per_class: int = field(default=0, metadata=_at_least(0))
    max_train: int = field(default=0, metadata=_at_least(0))
    max_eval: int = field(default=0, metadata=_at_least(0))
    resize: str = field(default="benchmark", metadata=_one_of(*RESIZES))
    select_on_test: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "Data")
        if self.select_split == self.test_split and not self.select_on_test:
            raise ConfigError(
                f"Data.select_split is the test split {self.test_split!r}: the CAM threshold would be chosen on the "
                "images it is scored on; choose another split (or None to hold images out of training), or set "
                "data.select_on_test=true to do it anyway, which the table then says"
            )
        if self.holdout and self.select_per_class:
            raise ConfigError("Data: holdout and select_per_class both choose the selection images; set one of them")


@dataclass(frozen=True)
class Training(_Checked):
    """How every arm is trained (the WSOL benchmark's defaults unless stated).

    Attributes:
        epochs, batch_size: as named (the global batch, split over processes under torchrun).
        lr: learning rate of the (pretrained) backbone.
        new_layer_lr_mult: the classifier and heads train at ``lr * new_layer_lr_mult``; 10 when the
            backbone is pretrained, 1 when everything is trained from scratch.
        optimizer: ``"sgd"`` (Nesterov; the WSOL benchmark's and SPG's) or ``"adamw"`` (what
            TS-CAM and the other transformer methods train with, through timm's optimiser factory:
            betas (0.9, 0.999), eps 1e-8, and no weight decay on 1-D parameters nor on what a timm
            model names in ``no_weight_decay()``, a ViT's position embedding and class token).
        momentum, nesterov: SGD settings (AdamW ignores them).
        weight_decay: as named, for both optimisers.
        grad_clip: clip the gradients' global norm to this value before each step; 0 (the
            default, as in the reference codes) never clips. A stabiliser for short runs, where
            SPG's B2 branch, trained on the few pixels its early seeds do not ignore, can blow up.
        schedule: ``"step"`` (x ``gamma`` every ``step_epochs``), ``"cosine"`` (per epoch) or
            ``"onecycle"`` (per step: a warm-up over the first ``warmup`` of all steps, then cosine
            annealing; what short runs from Xavier-initialised layers need to stay stable).
        warmup: the share of all steps ``"onecycle"`` warms up over.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        bf16: bfloat16 autocast, on CUDA and on the CPU (fast where the CPU has AVX512-BF16 or
            AMX, emulated and slow elsewhere). Losses differ from fp32 in the third digit.
        channels_last: channels-last memory format (faster convolutions on CUDA; on the CPU together
            with bf16, where it took a step from 1.5x to 2.0x the WSOL benchmark's, and not in fp32).
        compile: compile the forward pass with ``torch.compile`` (fused kernels); the first steps
            wait for the compiler (minutes for Inception-V3 on a small CPU), so it pays on long runs.
        frozen_bn: keep the backbone's batch-norm layers in eval mode (running statistics, no
            updates): the usual choice when fine-tuning with small per-GPU batches, and what makes
            a multi-process CPU run match the 1-process run exactly (SyncBatchNorm needs CUDA).
        num_workers: data-loading processes.
        eval_every: validate on the selection split every this many epochs (0: only at the end).
        log_every: steps between loss checks and progress updates.
        snapshot_every: every this many steps (and before the first and after the last), record
            the CAM and what the heads offer figures (SPG: every seed mask and map) for two fixed
            training images, for the figure of how the guidance evolves (``evolution_<arm>.png``);
            0 records none. Recording changes nothing the run computes.

    ``device``, ``num_workers``, ``eval_every``, ``log_every`` and ``snapshot_every`` say how a run
    executes, not what it computes; a finished run is reused whatever their values.
    """

    epochs: int = field(default=40, metadata=_positive())
    batch_size: int = field(default=64, metadata=_positive())
    lr: float = field(default=0.01, metadata=_positive())
    new_layer_lr_mult: float = field(default=10.0, metadata=_positive())
    optimizer: str = field(default="sgd", metadata=_one_of("sgd", "adamw"))
    momentum: float = field(default=0.9, metadata=_at_least(0))
    nesterov: bool = True
    weight_decay: float = field(default=1e-4, metadata=_at_least(0))
    grad_clip: float = field(default=0.0, metadata=_at_least(0))
    schedule: str = field(default="step", metadata=_one_of("step", "cosine", "onecycle"))
    step_epochs: int = field(default=30, metadata=_positive())
    gamma: float = field(default=0.1, metadata=_positive())
    warmup: float = field(default=0.3, metadata={"check": (lambda v: 0 < v < 1, "in (0, 1)")})
    device: str = "auto"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    frozen_bn: bool = False
    num_workers: int = field(default=0, metadata=_at_least(0))
    eval_every: int = field(default=1, metadata=_at_least(0))
    log_every: int = field(default=10, metadata=_positive())
    snapshot_every: int = field(default=0, metadata=_at_least(0))


#: Training fields that do not change what a run computes.
EXECUTION_FIELDS = ("device", "num_workers", "eval_every", "log_every", "snapshot_every")


@dataclass(frozen=True)
class Evaluation(_Checked):
    """How every evaluation defines its maps, boxes and metrics.

    Attributes:
        protocol: ``"benchmark"`` (the WSOL benchmark's definitions end to end, comparable with
            its published tables) or ``"float"``; see :data:`PROTOCOLS`.
        thresholds: number of CAM thresholds in [0, 1), ``np.arange(0, 1, 1 / thresholds)`` (the
            benchmark reports with 100).
    """

    protocol: str = field(default="benchmark", metadata=_one_of(*PROTOCOLS))
    thresholds: int = field(default=100, metadata=_positive())


@dataclass(frozen=True)
class Arm(_Checked):
    """One compared method: a name (its folder's: no ``/``, no leading ``.``), the heads it adds to
    the CAM classifier (none: plain CAM), and the :class:`Training` fields it trains with
    otherwise than the study (``training={"lr": 0.003}``: a method's own learning rate, as a
    hyperparameter search chooses it per method; the fields that say how a run executes,
    :data:`EXECUTION_FIELDS`, stay the study's)."""

    name: str = field(metadata=_folder_name())
    heads: tuple[HeadSpec, ...] = ()
    training: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.heads, HeadSpec):
            raise ConfigError(
                f"arm {self.name!r}: heads must be a tuple of HeadSpec, not one HeadSpec; "
                f"write heads=({self.heads!r},) with the trailing comma"
            )
        check_fields(self, f"arm {self.name!r}: Arm")
        names = [h.name for h in self.heads]
        if len(set(names)) != len(names):
            raise ConfigError(f"arm {self.name!r}: a head is listed twice: {names}")
        known = {f.name for f in dataclasses.fields(Training)} - set(EXECUTION_FIELDS)
        unknown = sorted(set(self.training) - known)
        if unknown:
            raise ConfigError(f"arm {self.name!r}: training has no field(s) {unknown} an arm may change; those it may: {', '.join(sorted(known))}")
        try:
            dataclasses.replace(Training(), **self.training)
        except ConfigError as exc:
            raise ConfigError(f"arm {self.name!r}: training: {exc}") from None


def arm_training(study: "Study", arm: Arm) -> "Study":
    """``study`` with ``arm``'s own training fields in place of the study's: what its runs train with."""
    if not arm.training:
        return study
    return dataclasses.replace(study, training=dataclasses.replace(study.training, **arm.training))


#: Where the shipped search spaces come from: the WSOL benchmark's table, which spgkit could not
#: read here (docs/results.rst says which ranges are verified).
BENCHMARK_SPACE = "the WSOL benchmark's search space (Choe et al. 2020, appendix Table 5) as recalled, not verified against the paper"

#: How a searched hyperparameter is drawn (:class:`Param`).
PARAM_KINDS = {
    "log": "a float, log-uniform in [low, high]",
    "uniform": "a float, uniform in [low, high]",
    "int": "an integer, uniform in [low, high]",
    "choice": "one of ``choices``",
    "pair": "a (high, low) pair of thresholds with high > low: low uniform in [low, high], then high "
    "uniform in [that low, high] (SPG's seed thresholds)",
}


@dataclass(frozen=True)
class Param(_Checked):
    """One searched hyperparameter of an arm, drawn as ``kind`` says (:data:`PARAM_KINDS`).

    ``path`` names the field as ``--set`` does, inside the arm: ``training.lr`` (the arm's own
    learning rate), ``heads.spg_b.args.b2_thresholds`` (a head's argument); in a head's
    ``search_space``, the argument's name alone. ``source`` says where the range comes from (a
    paper's table, "not verified", "spgkit's choice")."""

    path: str
    kind: str = field(metadata=_one_of(*PARAM_KINDS))
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        check_fields(self, f"Param {self.path!r}")
        if self.kind == "choice":
            if not self.choices or self.low is not None or self.high is not None:
                raise ConfigError(f"Param {self.path!r}: a choice takes choices=(...) and no low/high")
            return
        if self.low is None or self.high is None or not self.low < self.high or self.choices:
            raise ConfigError(f"Param {self.path!r}: a {self.kind} range takes low < high and no choices, not {self.low}, {self.high}")
        if self.kind == "log" and self.low <= 0:
            raise ConfigError(f"Param {self.path!r}: a log range must be positive, not from {self.low}")
        if self.kind == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ConfigError(f"Param {self.path!r}: an int range takes whole bounds, not {self.low}, {self.high}")


@dataclass(frozen=True)
class Search(_Checked):
    """How ``spgkit tune`` searches each arm's hyperparameters (:mod:`spgkit.tune`): ``trials``
    configurations per arm, drawn at random (seeded by ``seed``, planned before any trains), each
    trained once with the study's first seed and scored on the selection split (MaxBoxAccV2; PxAP
    where the data has masks); the best is trained again with every seed and reported on test.

    Attributes:
        trials: configurations per arm (the WSOL benchmark's 30).
        seed: seeds the draws; the same seed plans the same configurations.
        common: :class:`Param` s for every arm (a narrower learning-rate range for a short search).
        spaces: :class:`Param` s of one arm, by arm name.

    An arm searches its default space (:func:`spgkit.tune.default_space`: the learning rate, and
    each head's own ``search_space``) with the ``common`` and then its own ``spaces`` Params put in
    place by path (added where the default has no such path); a ``choice`` of one value fixes a
    field instead of searching it.
        training: :class:`Training` fields the trials train with otherwise than the study (a
            cheaper search: fewer epochs, as the benchmark's ``--proxy_training_set``); the
            chosen configuration is trained again as the study declares.
    """

    trials: int = field(default=30, metadata=_positive())
    seed: int = 0
    common: tuple[Param, ...] = ()
    spaces: Mapping[str, tuple[Param, ...]] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self, "Search")
        for arm, params in {"common": self.common, **self.spaces}.items():
            if not isinstance(params, tuple) or not all(isinstance(p, Param) for p in params):
                raise ConfigError(f"Search.spaces[{arm!r}] must be a tuple of Param, not {params!r}")
            paths = [p.path for p in params]
            outside = [p for p in paths if p.split(".")[0] not in ("training", "heads") or "." not in p]
            if outside:
                raise ConfigError(f"Search.spaces[{arm!r}]: {outside[0]!r} is not inside an arm: start with training. or heads.<head>.args.")
            if len(set(paths)) != len(paths):
                raise ConfigError(f"Search.spaces[{arm!r}]: a path is searched twice: {paths}")
        try:
            dataclasses.replace(Training(), **self.training)
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"Search.training: {exc}") from None


@dataclass(frozen=True)
class Study(_Checked):
    """A declared experiment: every arm, trained under one protocol, for every seed.

    Attributes:
        name: the output folder's name (one folder: no ``/``, no leading ``.``).
        data, training, evaluation: see :class:`Data`, :class:`Training`, :class:`Evaluation`.
        arms: the methods compared; the first is the baseline the results table compares every
            other arm with, seed by seed (conventionally ``Arm("cam")``).
        backbone, backbone_args: a registered backbone, or ``timm:<model>`` for any timm model, and
            its arguments (``pretrained``, ``weights``...).
        classifier_width: A3 filters (1024 in SPG).
        dropout: the CAM classifier's dropout; ``None`` (default) takes each arm's reference value:
            0.5 (the benchmark's CAM and SPG models), 0 in an arm with ACoL (its model has none).
        seeds: one run of every arm per seed; the table reports mean and spread.
        figure_images: evaluation images drawn in the overlay figures, and at most as many in
            each disagreement gallery.
        search: how ``spgkit tune`` searches the arms' hyperparameters (:class:`Search`); it
            changes nothing ``spgkit run`` computes.
        plugins: Python files whose hook implementations register heads (backbones, dataset
            readers) beside the installed plugin distributions: a head in one file, next to the
            study (``plugins=("my_head.py",)``). In a study file, paths are relative to its
            folder; ``spgkit run -p FILE`` adds more. A run records the source of every head it
            uses, so the runs of an edited file's head are refused (or, with ``--retrain``,
            trained again), as an edited plugin distribution's are.
    """

    name: str = field(metadata=_folder_name())
    data: Data
    arms: tuple[Arm, ...]
    backbone: str = "inception_v3"
    backbone_args: Mapping[str, Any] = field(default_factory=dict)
    classifier_width: int = field(default=1024, metadata=_positive())
    dropout: float | None = field(default=None, metadata={"check": (lambda v: 0 <= v < 1, "in [0, 1)")})
    training: Training = field(default_factory=Training)
    evaluation: Evaluation = field(default_factory=Evaluation)
    seeds: tuple[int, ...] = (0,)
    figure_images: int = field(default=6, metadata=_at_least(0))
    search: Search = field(default_factory=Search)
    plugins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_fields(self, f"study {self.name!r}: Study")
        names = [arm.name for arm in self.arms]
        if not names:
            raise ConfigError(f"study {self.name!r} has no arms")
        if len(set(names)) != len(names):
            raise ConfigError(f"study {self.name!r}: arm names repeat: {names}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"study {self.name!r}: seeds must be distinct and at least one, not {self.seeds}")
        unknown = sorted(set(self.search.spaces) - set(names))
        if unknown:
            raise ConfigError(f"study {self.name!r}: Search.spaces names no arm(s) {unknown}; its arms: {names}")
