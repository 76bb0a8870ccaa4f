"""Load a study file, check it whole before anything trains, change any of its fields, and run it.

``spgkit run my_study.py`` trains every arm for every seed into ``<out>/<study>/<arm>/seed<k>/``
and writes the results table and figures into ``<out>/<study>/`` (see :mod:`spgkit.runs`). The
declarations themselves live in :mod:`spgkit.config`.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from spgkit.backbones import check_pretrained
from spgkit.config import Arm, ConfigError, LocalData, Study, arm_training, conforms, type_name
from spgkit.data import IMAGENET_MEAN, IMAGENET_STD, resolve_local
from spgkit.distributed import Dist, resolve_device
from spgkit.model import build_model
from spgkit.plugins import PluginError, Registry, check_arguments, import_file
from spgkit.figures import write_figures
from spgkit.report import Collected, collect, write_tables
from spgkit.executors import ExecutorError, LocalExecutor, RayExecutor
from spgkit.runs import StudyFolder, run_config, scored_with
from spgkit.score import center_baseline
from spgkit.optim import make_optimizer
from spgkit.splits import make_datasets, open_split, study_facts
from spgkit.train import train_step


class StudyError(ValueError):
    """A study that cannot be loaded, changed or run as declared; the message names the file, the
    arm and the field at fault."""


def load_study(path: str | Path) -> Study:
    """Import a study file and return its module-level ``STUDY``, its ``plugins`` taken relative
    to the file's folder."""
    path = Path(path)
    module = import_file(path, f"spgkit_study_{path.stem}", StudyError, "study", plain=(ConfigError,))
    study = getattr(module, "STUDY", None)
    if not isinstance(study, Study):
        raise StudyError(f"{path}: defines no module-level STUDY = Study(...)")
    return dataclasses.replace(study, plugins=tuple(str(path.parent / p) for p in study.plugins)) if study.plugins else study


# --------------------------------------------------------------------------- checking


def check_study(study: Study, registry: Registry, where: str = "") -> None:
    """Check everything that can be checked before training, so that no arm fails after others
    trained: the dataset's name and arguments and its folders, the backbone's name, arguments and
    weights, the device, and for every arm a model built without weights (head names, head
    arguments bound to their constructors, needs, feature roles) that runs one training step at
    the study's image size (:func:`check_arm`). The first error is raised as :class:`StudyError`
    naming ``where`` (the file), the arm and the field."""
    prefix = f"{where}: " if where else ""

    def fail(field: str, exc: Exception) -> StudyError:
        return StudyError(f"{prefix}{field}: {exc}")

    data = study.data
    try:
        reader = registry.dataset(data.name)
        check_arguments(reader, {"split": data.train_split, "transform": None, **data.args}, f"dataset {data.name!r}")
        for value in data.args.values():
            if isinstance(value, LocalData):
                resolve_local(value)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise fail("data", exc) from None
    try:
        factory = registry.backbone(study.backbone)
        check_arguments(factory, study.backbone_args, f"backbone {study.backbone!r}")
        check_pretrained(study.backbone, study.backbone_args)
    except (ValueError, TypeError, RuntimeError, ImportError, FileNotFoundError) as exc:
        raise fail("backbone", exc) from None
    try:
        resolve_device(study.training.device)
    except ValueError as exc:
        raise fail("training.device", exc) from None
    for arm in study.arms:
        check_arm(study, arm, registry, prefix)


def checked_facts(study: Study, registry: Registry, where: str = "") -> dict[str, Any]:
    """:func:`~spgkit.splits.study_facts`, which opens every split: a dataset reader's refusal of
    its arguments (a range :func:`check_study` leaves to it) is a StudyError naming ``where`` and
    the field, as check_study's are."""
    try:
        return study_facts(study, registry)
    except (ValueError, TypeError) as exc:
        raise StudyError(f"{where + ': ' if where else ''}data: {exc}") from None


def refuse_conflicts(study: Study, planned: list, facts: dict[str, Any]) -> None:
    """The :class:`~spgkit.runs.RunConflict` of the first planned ``(arm, seed, run)`` whose folder
    was trained with another configuration, before any run trains: a changed study in the same
    ``--out`` stops before it trains some arms and leaves the rest. Each run checks again under
    its lock when it starts."""
    for arm, seed, run in planned:
        conflict = run.conflict(run_config(arm_training(study, arm), arm, seed, facts))
        if conflict:
            raise conflict


#: Images in the batch of :func:`check_arm`'s training step.
CHECK_BATCH = 2


def check_arm(study: Study, arm: Arm, registry: Registry, prefix: str = "") -> None:
    """Build ``arm``'s model without weights and run one training step on a tiny random batch at
    the study's image size (train mode, labels, every loss, backward, the optimiser's step), so a
    head whose constructor, forward or loss fails stops the study before any arm trains. Global
    random state is left as it was. StudyError names the arm and the cause."""
    offline = {k: v for k, v in study.backbone_args.items() if k not in ("pretrained", "weights")}
    size = study.data.image_size

    def build():
        return build_model(
            CHECK_BATCH, list(arm.heads), backbone=study.backbone, backbone_args=offline,
            classifier_width=study.classifier_width, dropout=study.dropout, registry=registry,
        )  # fmt: skip

    def fails(side: int) -> str | None:
        """Why a forward pass on the meta device fails at ``side`` pixels (None if it does not)."""
        with torch.device("meta"):
            try:
                build().eval()(torch.empty(CHECK_BATCH, 3, side, side))
            except PluginError:
                raise
            except (RuntimeError, AssertionError) as exc:  # timm asserts an image fits a ViT's patches
                return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            small = fails(size)
            if small and not fails(max(4 * size, 512)):
                raise StudyError(f"image size {size} is too small for backbone {study.backbone!r} ({small})")
            model = build()
            images, labels = torch.randn(CHECK_BATCH, 3, size, size), torch.arange(CHECK_BATCH)
            train_step(model, model, make_optimizer(model, arm_training(study, arm)), images, labels)
    except (ValueError, TypeError, PluginError) as exc:  # StudyError included: messages that name their cause
        raise StudyError(f"{prefix}arm {arm.name!r}: {exc}") from None
    except Exception as exc:  # the step ran the head's own code: whatever it raised is the cause
        first = (str(exc).strip().splitlines() or [""])[0]
        raise StudyError(f"{prefix}arm {arm.name!r}: one training step on a tiny batch failed: {type(exc).__name__}: {first}") from None


# --------------------------------------------------------------------------- changing


#: Command-line shorthands for study fields: ``--epochs 3`` is ``--set training.epochs=3``.
SHORTHANDS = {
    "epochs": "training.epochs",
    "batch_size": "training.batch_size",
    "lr": "training.lr",
    "device": "training.device",
    "bf16": "training.bf16",
    "channels_last": "training.channels_last",
    "compile": "training.compile",
    "num_workers": "training.num_workers",
    "image_size": "data.image_size",
    "max_train": "data.max_train",
    "max_eval": "data.max_eval",
    "data_root": "data.args.root",
    "protocol": "evaluation.protocol",
    "seeds": "seeds",
}


def field_type(path: str) -> Any:
    """The declared type of the field a dotted path names inside a :class:`Study` (``Any`` inside
    a mapping such as ``data.args``); StudyError for an unknown field."""
    hint: Any = Study
    for part in path.split("."):
        origin = typing.get_origin(hint)
        if origin is tuple:
            hint = typing.get_args(hint)[0]
            continue  # a tuple of named declarations: this part is the name
        if origin is Mapping or hint is Any:
            return Any
        fields = {f.name for f in dataclasses.fields(hint)}
        if part not in fields:
            raise StudyError(f"{hint.__name__} has no field {part!r} (in {path!r}); its fields: {', '.join(sorted(fields))}")
        hint = typing.get_type_hints(hint)[part]
    return hint


def parse_value(text: str, hint: Any) -> Any:
    """A command-line value for a field of type ``hint``: JSON (``3``, ``0.5``, ``true``,
    ``null``, ``[1, 2]``, ``{"a": 1}``), ``none`` for None, ``1,2,3`` for a tuple, else the text."""
    if text.strip().lower() == "none" and conforms(None, hint):
        return None
    if typing.get_origin(hint) is tuple and not text.strip().startswith("["):
        return tuple(parse_value(t, typing.get_args(hint)[0]) for t in text.replace(",", " ").split())
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(value, list) and typing.get_origin(hint) is tuple:
        value = tuple(value)
    return value if conforms(value, hint) else text


def override(study: Study, settings: Mapping[str, Any]) -> Study:
    """A copy of ``study`` with fields changed by dotted path, e.g. ``{"training.epochs": 3,
    "data.args.num_images": 500, "arms.spg.heads.spg_b.args.width": 64}`` (arms and heads by
    name). Every value is checked against the field's declared type; an unknown field or a
    wrong value is a :class:`StudyError` naming the path."""
    for path, value in settings.items():
        hint = field_type(path)
        if isinstance(value, str) and hint is not str:
            value = parse_value(value, hint)
        if not conforms(value, hint):
            raise StudyError(f"--set {path}: expected {type_name(hint)}, not {value!r}")
        try:
            study = _replace(study, path.split("."), value, path)
        except ConfigError as exc:
            raise StudyError(f"--set {path}: {exc}") from None
    return study


def _replace(obj: Any, parts: list[str], value: Any, path: str) -> Any:
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(obj, tuple):  # arms or heads, by name
        names = [item.name for item in obj]
        if head not in names:
            raise StudyError(f"--set {path}: no {head!r} here; there are {names}")
        return tuple(_replace(item, rest, value, path) if item.name == head else item for item in obj)
    if isinstance(obj, Mapping):
        if not rest:
            return {**obj, head: value}
        return {**obj, head: _replace(obj.get(head, {}), rest, value, path)}
    return dataclasses.replace(obj, **{head: _replace(getattr(obj, head), rest, value, path)})


def select_arms(study: Study, names: list[str]) -> Study:
    """The study with only the named arms, in the study's order."""
    known = [arm.name for arm in study.arms]
    unknown = [a for a in names if a not in known]
    if unknown:
        raise StudyError(f"study {study.name!r} has no arm(s) {unknown}; its arms: {known}")
    spaces = {arm: params for arm, params in study.search.spaces.items() if arm in names}
    return dataclasses.replace(study, arms=tuple(arm for arm in study.arms if arm.name in names), search=dataclasses.replace(study.search, spaces=spaces))


# --------------------------------------------------------------------------- running


def run_study(
    study: Study, out: str | Path = "runs", *, registry: Registry | None = None, progress: bool = True, retrain: bool = False,
    where: str = "", arms: list[str] | None = None, executor: LocalExecutor | RayExecutor | None = None, preface: str = "",
) -> StudyFolder:  # fmt: skip
    """Check the whole study, train every arm (or only ``arms``) for every seed, reusing finished
    runs of the same configuration and resuming interrupted ones, then write ``results.csv``,
    ``results.md``, ``differences.csv`` and ``figures/`` under ``<out>/<study.name>`` from every
    run of the study whose record matches it (so ``arms`` adds to the study's report, never
    narrows it). A run that diverges is warned about and reported as such in the tables; the
    other runs go on.

    ``executor`` says where the runs train (:mod:`spgkit.executors`): in this process, one after
    another (the default), or as Ray tasks. Many processes may run one study folder at once: a
    run another process holds is waited for (and reused, not trained twice); the report is
    written under the study's own lock from what the runs recorded. ``folder.actions`` counts
    what was done: ``train``, ``evaluate``, ``done`` (reused), ``diverged``; ``folder.nodes`` the
    Ray node of each run, by ``(arm, seed)``. ``preface`` opens ``results.md`` (how the arms were
    configured: :func:`spgkit.tune.preface`)."""
    registry = registry if registry is not None else Registry(plugins=study.plugins)
    check_study(study, registry, where)
    folder = StudyFolder(out, study)
    facts = checked_facts(study, registry, where)
    chosen = select_arms(study, arms).arms if arms else study.arms
    planned = [(arm, seed, folder.run(arm.name, seed)) for arm in chosen for seed in study.seeds]
    executor = executor if executor is not None else LocalExecutor()
    if not retrain:
        refuse_conflicts(study, planned, facts)

    def report() -> None:
        folder.actions = dict(Counter(run.action for _, _, run in planned if run.action))
        folder.nodes = {(arm.name, seed): run.node for arm, seed, run in planned if run.node}
        if Dist.from_env(resolve_device(study.training.device))[0].main:
            write_report(study, folder, registry, facts, preface)

    try:
        executor.run(study, planned, registry=registry, facts=facts, progress=progress, retrain=retrain)
    except ExecutorError:  # some runs failed for reasons of their own: the others are reported
        report()
        raise
    report()
    return folder


def write_report(study: Study, folder: StudyFolder, registry: Registry, facts: dict[str, Any], preface: str = "") -> Collected:
    """The study's tables and figures, under its report lock, from the runs whose record matches
    ``study`` (:func:`~spgkit.report.collect`), with the centre baseline on the same test split."""
    asked = {(arm.name, seed): scored_with(run_config(study, arm, seed, facts)) for arm in study.arms for seed in study.seeds}
    with folder.reporting():
        collected = collect(study, folder, asked)
        folder.clear_reports()
        write_tables(study, folder, collected, center_metrics(study, registry), preface, registry)
        write_figures(study, folder, collected, registry)
    return collected


def center_metrics(study: Study, registry: Registry) -> dict[str, Any]:
    """The centre baseline (:func:`~spgkit.score.center_baseline`) on the study's test images,
    its GT-known Loc at the threshold chosen as runs choose theirs: its best on the selection
    images (the held-out training images, or ``select_split``, capped alike)."""
    e = study.evaluation
    train = open_split(study, study.data.train_split, None, registry)
    _, select, test = make_datasets(study, registry, train, IMAGENET_MEAN, IMAGENET_STD)
    kwargs = {"thresholds": e.thresholds, "protocol": e.protocol, "batch_size": study.training.batch_size}
    chosen = center_baseline(select, **kwargs)["maxboxacc_threshold"]
    return center_baseline(test, cam_threshold=chosen, **kwargs)


__all__ = ["Arm", "StudyError", "center_metrics", "check_arm", "check_study", "load_study", "override", "run_study", "select_arms", "write_report"]
