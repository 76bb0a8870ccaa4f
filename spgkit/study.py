"""Declared experiments: a :class:`Study` of :class:`Arm` s, loaded from a Python file and run.

A study file defines one module-level ``STUDY``::

    from spgkit.study import Arm, Data, Study, Training
    from spgkit.model import HeadSpec

    STUDY = Study(
        name="my_study",
        data=Data("synthwsol", {"num_images": 2000}, image_size=64),
        arms=(Arm("cam"), Arm("spg", (HeadSpec("spg_b"), HeadSpec("spg_c")))),
        training=Training(epochs=10, batch_size=32),
        seeds=(0, 1),
    )

``spgkit run my_study.py`` trains every arm for every seed into ``<out>/<study>/<arm>/seed<k>/``
and writes the results table and figures into ``<out>/<study>/``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from spgkit.model import HeadSpec


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

    def resolve(self) -> str:
        """The dataset folder: ``$env``, else the shared archive extracted into the cache, else a
        :class:`StudyError` with the download instructions."""
        import os

        from spgkit.data.archive import extract

        if os.environ.get(self.env):
            path = Path(os.environ[self.env])
            if not path.is_dir():
                raise StudyError(f"${self.env} = {path} is not a folder")
            return str(path)
        shared = Path(os.environ.get("SPGKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
        if (shared / self.archive).is_file():
            cache = Path(os.environ.get("SPGKIT_CACHE", Path.home() / ".cache" / "spgkit"))
            return str(extract(shared / self.archive, cache) / self.folder)
        raise StudyError(f"dataset not found: set ${self.env} to its folder. {self.instructions}")


@dataclass(frozen=True)
class Data:
    """Where the images come from.

    Attributes:
        name: a key of :data:`spgkit.data.DATASETS` (``synthwsol``, ``cub``, ``tiny_imagenet``, ...).
        args: constructor arguments of that reader shared by every split (``root``, ...); a
            :class:`LocalData` value is resolved to a folder when the study runs.
        image_size: training crop and evaluation resize.
        train_split: split the model learns from.
        select_split: split on which the CAM threshold is chosen (the benchmark's held-out
            ``train-fullsup``); ``None`` carves ``holdout`` images out of ``train_split`` instead.
        test_split: split reported in the results table; never used for any choice.
        holdout: images carved out of the training split when ``select_split`` is ``None``.
        max_train, max_eval: cap the number of images used (0 = all); for quick runs.
    """

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    image_size: int = 224
    train_split: str = "train"
    select_split: str | None = "val"
    test_split: str = "test"
    holdout: int = 0
    max_train: int = 0
    max_eval: int = 0


@dataclass(frozen=True)
class Training:
    """How every arm is trained (the WSOL benchmark's defaults unless stated).

    Attributes:
        epochs, batch_size: as named.
        lr: learning rate of the (pretrained) backbone.
        new_layer_lr_mult: the classifier and heads train at ``lr * new_layer_lr_mult``; 10 when the
            backbone is pretrained, 1 when everything is trained from scratch.
        momentum, nesterov, weight_decay: SGD settings.
        schedule: ``"step"`` (x ``gamma`` every ``step_epochs``) or ``"cosine"``.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        bf16: bfloat16 autocast on CUDA.
        channels_last: channels-last memory format (faster convolutions on CUDA and on most CPUs).
        frozen_bn: keep the backbone's batch-norm layers in eval mode (running statistics, no
            updates): the usual choice when fine-tuning with small per-GPU batches, and what makes
            a multi-process CPU run match the 1-process run exactly (SyncBatchNorm needs CUDA).
        num_workers: data-loading processes.
        eval_every: validate on the selection split every this many epochs (0: only at the end).
        thresholds: number of CAM thresholds in [0, 1) for every evaluation (the benchmark
            reports with 100).
        protocol: how every evaluation defines its maps, boxes and metrics: ``"benchmark"`` (the
            WSOL benchmark's definitions end to end, comparable with its published tables) or
            ``"float"`` (see :data:`spgkit.localization.PROTOCOLS`).
        log_every: steps between loss checks and progress updates.
    """

    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.01
    new_layer_lr_mult: float = 10.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: str = "step"
    step_epochs: int = 30
    gamma: float = 0.1
    device: str = "auto"
    bf16: bool = False
    channels_last: bool = False
    frozen_bn: bool = False
    num_workers: int = 0
    eval_every: int = 1
    thresholds: int = 100
    protocol: str = "benchmark"
    log_every: int = 10


@dataclass(frozen=True)
class Arm:
    """One compared method: a name and the heads it adds to the CAM classifier (none: plain CAM)."""

    name: str
    heads: tuple[HeadSpec, ...] = ()


@dataclass(frozen=True)
class Study:
    """A declared experiment: every arm, trained under one protocol, for every seed.

    Attributes:
        name: the output folder's name.
        data, training: see :class:`Data`, :class:`Training`.
        arms: the methods compared; the first is the baseline the results table compares every
            other arm with, seed by seed (conventionally ``Arm("cam")``).
        backbone, backbone_args: a registered backbone and its arguments (``pretrained``,
            ``weights``...).
        classifier_width: A3 filters (1024 in SPG).
        dropout: the CAM classifier's dropout; ``None`` (default) takes each arm's reference value:
            0.5 (the benchmark's CAM and SPG models), 0 in an arm with ACoL (its model has none).
        seeds: one run of every arm per seed; the table reports mean and spread.
        figure_images: evaluation images drawn in the overlay figures.
    """

    name: str
    data: Data
    arms: tuple[Arm, ...]
    backbone: str = "inception_v3"
    backbone_args: Mapping[str, Any] = field(default_factory=dict)
    classifier_width: int = 1024
    dropout: float | None = None
    training: Training = field(default_factory=Training)
    seeds: tuple[int, ...] = (0,)
    figure_images: int = 6

    def __post_init__(self):
        names = [arm.name for arm in self.arms]
        if not names:
            raise ValueError(f"study {self.name!r} has no arms")
        if len(set(names)) != len(names):
            raise ValueError(f"study {self.name!r}: arm names repeat: {names}")


class StudyError(ValueError):
    """A study file that cannot be loaded; the message names the file."""


def load_study(path: str | Path) -> Study:
    """Import a study file and return its module-level ``STUDY``."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no such study file")
    module_name = f"spgkit_study_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise StudyError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses need the module while the file runs
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        tb = exc.__traceback__
        line = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == str(path):
                line = tb.tb_lineno
            tb = tb.tb_next
        where = f"{path}:{line}" if line else str(path)
        raise StudyError(f"{where}: {type(exc).__name__}: {exc}") from exc
    study = getattr(module, "STUDY", None)
    if not isinstance(study, Study):
        raise StudyError(f"{path}: defines no module-level STUDY = Study(...)")
    return study


def override(study: Study, **changes: Any) -> Study:
    """A copy of ``study`` with the usual knobs changed; ``None`` values are left alone.

    Knobs: ``epochs``, ``batch_size``, ``lr``, ``device``, ``num_workers``, ``bf16``, ``protocol`` (training);
    ``image_size``, ``max_train``, ``max_eval`` (data); ``seeds``; ``arms`` (names to keep);
    ``data_root`` (``data.args["root"]``).
    """
    changes = {k: v for k, v in changes.items() if v is not None}
    training = {k: changes.pop(k) for k in ("epochs", "batch_size", "lr", "device", "num_workers", "bf16", "protocol") if k in changes}
    data = {k: changes.pop(k) for k in ("image_size", "max_train", "max_eval") if k in changes}
    if "data_root" in changes:
        data["args"] = {**study.data.args, "root": str(changes.pop("data_root"))}
    top: dict[str, Any] = {}
    if "seeds" in changes:
        top["seeds"] = tuple(changes.pop("seeds"))
    if "arms" in changes:
        keep = list(changes.pop("arms"))
        known = [arm.name for arm in study.arms]
        unknown = [a for a in keep if a not in known]
        if unknown:
            raise StudyError(f"study {study.name!r} has no arm(s) {unknown}; its arms: {known}")
        top["arms"] = tuple(arm for arm in study.arms if arm.name in keep)
    if changes:
        raise TypeError(f"unknown override(s): {sorted(changes)}")
    return dataclasses.replace(
        study,
        training=dataclasses.replace(study.training, **training),
        data=dataclasses.replace(study.data, **data),
        **top,
    )


def run_study(study: Study, out: str | Path = "runs", *, registry=None, progress: bool = True) -> Path:
    """Train every arm for every seed (skipping finished runs, resuming interrupted ones), then
    write ``results.csv``, ``results.md`` and ``figures/`` under ``<out>/<study.name>``."""
    from spgkit.plugins import Registry
    from spgkit.report import write_figures, write_tables
    from spgkit.train import Dist, resolve_device, train_arm

    root = Path(out) / study.name
    registry = registry if registry is not None else Registry()
    for arm in study.arms:
        for seed in study.seeds:
            train_arm(study, arm, seed, root / arm.name / f"seed{seed}", registry=registry, progress=progress)
    if Dist.from_env(resolve_device(study.training.device)).main:
        write_tables(study, root)
        write_figures(study, root, registry)
    return root
