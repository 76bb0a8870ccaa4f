"""Where results live: a run's folder (one arm, one seed) and a study's folder. The layout is
spelled out here and nowhere else.

A run folder records what its numbers depend on (``config.json``, :func:`run_config`): the whole
declaration, the source fingerprints of the plugins it used and the fingerprints of the splits it
read (:mod:`spgkit.record`). A run is reused only where that record matches: a re-run whose
training part differs is refused with the differing fields named (or, when asked, trained again
from scratch), and one whose evaluation part alone differs is scored again from its checkpoint.
``metrics.json`` records what its scores were computed with and ``per_image.npz`` and
``figures.npz`` (what figures draw, so that no model is rebuilt to draw them) a hash of it,
so a report never takes them for another configuration's, and old scores can stay until new ones
replace them. Every file is checked when read back (:class:`RunFileError` names it). A lock per
run keeps two processes out of one folder, and one per study serialises reports. The layout::

    <out>/<study>/results.csv, results.md, differences.csv, figures/, .report.lock
    <out>/<study>/<arm>/seed<k>/config.json, checkpoint.pt, log.csv, metrics.json, per_image.npz,
                               figures.npz, snapshots.pt, .lock
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from spgkit.config import EXECUTION_FIELDS, MAX_IMAGE_SIZE, Arm, Data, Evaluation, HeadSpec, Study, Training, arm_training, conforms
from spgkit.io import load_checkpoint, read_json, save_checkpoint, write_arrays, write_csv, write_json
from spgkit.model import WSOLModel, build_model
from spgkit.plugins import Registry


class RunConflict(ValueError):
    """A run folder holds results of another configuration than the one asked for."""


class RunBusy(RunConflict):
    """Another process holds the run's lock."""


class RunFileError(ValueError):
    """A file of a run folder that spgkit cannot use as it is; the message names it and what to do."""


#: What a :class:`RunFileError` suggests.
FIX = "delete the run's folder, or re-run with --retrain"
#: What a finished run's ``metrics.json`` always holds.
METRICS = ("cam_threshold", "top1_acc", "maxboxaccv2", "test_images")
#: What ``per_image.npz`` always holds.
PER_IMAGE = ("image_id", "cam_iou", "largest_iou", "best_iou", "iou_thresholds")
#: What ``figures.npz`` always holds (with ``visual/<name>`` arrays where the heads offer visuals).
FIGURE_DATA = ("map", "mean", "std")


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunFileError(f"{path}: not valid JSON ({exc}); {FIX}") from None


def run_config(study: Study, arm: Arm, seed: int, facts: dict[str, Any]) -> dict[str, Any]:
    """What one run computes, as plain JSON: ``training`` (everything that changes the trained
    weights: the declaration with every default, the source fingerprints of the dataset reader,
    backbone and heads it uses and the fingerprint of the training split), ``evaluation`` (how
    and on what they are scored: the settings and the selection and test splits' fingerprints)
    and ``environment`` (the library versions of the process that trained or last scored the
    run; recorded, not compared). ``facts`` comes from
    :func:`spgkit.train.study_facts`."""
    training = {k: v for k, v in dataclasses.asdict(arm_training(study, arm).training).items() if k not in EXECUTION_FIELDS}
    sources = facts["sources"]
    used = [f"dataset {study.data.name}", f"backbone {study.backbone}"] + [f"head {h.name}" for h in arm.heads]
    return _plain(
        {
            "training": {
                "study": study.name,
                "arm": dataclasses.asdict(arm),
                "seed": seed,
                "data": dataclasses.asdict(study.data),
                "backbone": study.backbone,
                "backbone_args": dict(study.backbone_args),
                "classifier_width": study.classifier_width,
                "dropout": study.dropout,
                "training": training,
                "sources": {key: sources[key] for key in used},
                "splits": {"train": facts["splits"]["train"]},
            },
            "evaluation": {
                **dataclasses.asdict(study.evaluation),
                "splits": {k: v for k, v in facts["splits"].items() if k != "train"},
            },
            "environment": facts["environment"],
        }
    )


def scored_with(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a :func:`run_config` that a run's scores depend on (all but the environment):
    what ``metrics.json`` records as ``record``."""
    return {"training": config["training"], "evaluation": config["evaluation"]}


def record_hash(record: dict[str, Any]) -> str:
    """A short hash of a :func:`scored_with` record, kept in ``per_image.npz``."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def mismatch(recorded: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    """The differences between two :func:`scored_with` records, training then evaluation."""
    return [d for part in ("training", "evaluation") for d in differences(recorded.get(part, {}), asked[part], part)]


def _plain(value: Any) -> Any:
    # JSON's own types, so a config compares equal to the one read back from config.json.
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def _field_defaults(cls, prefix: str) -> dict[str, Any]:
    missing = dataclasses.MISSING
    return {
        f"{prefix}{f.name}": _plain(f.default if f.default is not missing else f.default_factory())
        for f in dataclasses.fields(cls)
        if f.default is not missing or f.default_factory is not missing
    }


#: Fields whose default changed: what a run recorded before the field existed computed.
LEGACY = {"data.resize": "torchvision"}
#: Each part of :func:`run_config` -> the default of every field it flattens to: a run recorded
#: before spgkit had a field computed what the field's default computes (or :data:`LEGACY` says).
DEFAULTS = {
    "training": {**_field_defaults(Training, "training."), **_field_defaults(Data, "data."), **_field_defaults(Arm, "arm."), **LEGACY},
    "evaluation": _field_defaults(Evaluation, ""),
}


def differences(recorded: dict, asked: dict, part: str) -> list[str]:
    """``field: recorded -> asked`` for every field of ``part`` of :func:`run_config`
    (``"training"`` or ``"evaluation"``) that differs (dotted paths). A field the recorded config
    lacks counts as its default (:data:`DEFAULTS`), so adding a field to spgkit keeps old runs."""
    old, new = _flatten(recorded), _flatten(asked)
    old = {**{k: v for k, v in DEFAULTS[part].items() if k in new}, **old}
    return [f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}" for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]


def model_config(study: Study, arm: Arm, num_classes: int, class_names: list[str], mean, std) -> dict[str, Any]:
    """Everything needed to rebuild the model from a checkpoint, in plain types."""
    return {
        "backbone": study.backbone,
        "backbone_args": dict(study.backbone_args),
        "heads": [[h.name, dict(h.args), h.weight] for h in arm.heads],
        "num_classes": num_classes,
        "class_names": list(class_names),
        "classifier_width": study.classifier_width,
        "dropout": study.dropout,
        "image_size": study.data.image_size,
        "resize": study.data.resize,
        "mean": list(mean),
        "std": list(std),
    }


def model_from_config(config: dict[str, Any], registry: Registry | None = None) -> WSOLModel:
    """Rebuild a model from :func:`model_config` (weights come from the checkpoint, not the hub)."""
    backbone_args = {k: v for k, v in config["backbone_args"].items() if k not in ("pretrained", "weights")}
    return build_model(
        config["num_classes"],
        [HeadSpec(*head) for head in config["heads"]],
        backbone=config["backbone"],
        backbone_args=backbone_args,
        classifier_width=config["classifier_width"],
        dropout=config["dropout"],
        registry=registry,
    )


#: Bounds of a checkpoint's model config (:func:`check_model_config`).
MAX_CLASSES = 1_000_000
MAX_WIDTH = 65_536


def check_model_config(config: Any, path: str | Path) -> None:
    """:class:`RunFileError`, naming the file and the field, unless a checkpoint's model config
    (:func:`model_config`) holds what a model can be built from: checked before anything is
    built, since a class count of 1e11 would try to allocate terabytes."""

    def bad(field: str, why: str):
        raise RunFileError(f"{path}: its config's {field} {why}; this is no checkpoint spgkit can use (train the run again, or use another file)")

    if not isinstance(config, dict):
        bad("", f"is a {type(config).__name__}, not a mapping")
    classes = config.get("num_classes")
    if not conforms(classes, int) or not 1 <= classes <= MAX_CLASSES:
        bad("num_classes", f"is {classes!r}, not a whole number from 1 to {MAX_CLASSES:,}")
    names = config.get("class_names")
    if names is not None and (not isinstance(names, (list, tuple)) or len(names) != classes or not all(isinstance(n, str) for n in names)):
        bad("class_names", f"is not a list of {classes} names")
    size = config.get("image_size")
    if not conforms(size, int) or not 2 <= size <= MAX_IMAGE_SIZE:
        bad("image_size", f"is {size!r}, not a whole number from 2 to {MAX_IMAGE_SIZE}")
    for field in ("mean", "std"):
        value = config.get(field)
        if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(conforms(v, float) for v in value):
            bad(field, f"is {value!r}, not 3 finite numbers")
    if not all(v > 0 for v in config["std"]):
        bad("std", f"is {config['std']!r}: a standard deviation must be positive")
    width = config.get("classifier_width")
    if not conforms(width, int) or not 1 <= width <= MAX_WIDTH:
        bad("classifier_width", f"is {width!r}, not a whole number from 1 to {MAX_WIDTH:,}")
    dropout = config.get("dropout")
    if dropout is not None and not (conforms(dropout, float) and 0 <= dropout < 1):
        bad("dropout", f"is {dropout!r}, not a number in [0, 1)")
    if not isinstance(config.get("backbone"), str):
        bad("backbone", f"is {config.get('backbone')!r}, not a name")
    if not isinstance(config.get("backbone_args"), dict):
        bad("backbone_args", "is not a mapping")
    heads = config.get("heads")
    if not isinstance(heads, (list, tuple)) or not all(
        isinstance(h, (list, tuple)) and len(h) == 3 and isinstance(h[0], str) and isinstance(h[1], dict) and conforms(h[2], float) for h in heads
    ):
        bad("heads", "is not a list of [name, arguments, weight]")
    if not isinstance(config.get("resize", "torchvision"), str):
        bad("resize", "is not a name")


def load_model(path: str | Path, registry: Registry | None = None) -> tuple[WSOLModel, dict[str, Any]]:
    """A trained model (in eval mode) and its config from a checkpoint written by a run."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise ValueError(f"{path}: not an spgkit checkpoint (no model config)")
    check_model_config(state["config"], path)
    model = model_from_config(state["config"], registry)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)]
        raise ValueError(f"{path}: its weights do not fit the model its config describes ({first[0].strip()})") from None
    # A checkpoint from before a field existed was made as LEGACY says.
    return model.eval(), {"resize": LEGACY["data.resize"], **state["config"]}


class RunFolder:
    """The files of one arm and seed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.checkpoint = self.path / "checkpoint.pt"
        self.log = self.path / "log.csv"
        self.metrics = self.path / "metrics.json"
        self.per_image = self.path / "per_image.npz"
        self.figure_data = self.path / "figures.npz"
        self.snapshots = self.path / "snapshots.pt"
        self.action: str | None = None  #: what :func:`~spgkit.train.train_arm` did last: train, evaluate or done
        self.node: str | None = None  #: the Ray node that ran it, under :class:`~spgkit.executors.RayExecutor`

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @contextlib.contextmanager
    def lock(self, wait: bool = False) -> Iterator[None]:
        """Hold the folder's lock. Another process holding it: :class:`RunBusy`, or with ``wait``,
        wait for it to finish."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise RunBusy(f"{self.path}: another spgkit process is running this run; wait for it or use another --out") from None
            yield

    def prepare(self, config: dict[str, Any], retrain: bool = False) -> str:
        """Compare ``config`` (from :func:`run_config`) with what the folder holds and say what to do:
        ``"train"`` (nothing usable yet, or a checkpoint to resume from), ``"evaluate"`` (trained with
        this configuration, but not yet scored with it) or ``"done"`` (scored with it: its
        ``metrics.json`` records the same :func:`scored_with`, and its ``per_image.npz`` belongs to
        those metrics). Records ``config`` in ``config.json``.

        A folder trained with another configuration raises :class:`RunConflict` naming the fields;
        ``retrain`` empties the folder and trains again whatever it holds. Scores of another
        evaluation stay until the new ones replace them: they are recorded with what they were
        scored with, so nothing reports them as the new ones.
        """
        for stale in self.path.glob(".*.tmp"):  # half-written by a killed process; the target is intact
            stale.unlink()
        if retrain:
            self.clear()
        conflict = self.conflict(config)
        if conflict:
            raise conflict
        recorded = self.read_config() if self.config.exists() else None
        # Nothing recorded yet, or scored otherwise: a run reused as it is keeps the environment
        # that trained and scored it, not this process's.
        if recorded is None or scored_with(recorded) != scored_with(config):
            write_json(self.config, config)
        if not self.metrics.exists():
            return "train"
        metrics = self.read_metrics()
        if "diverged" in metrics:
            return "done"  # no final model to score: it stays as recorded
        if "record" not in metrics or mismatch(metrics["record"], scored_with(config)):
            return "evaluate"
        for path in (self.per_image, self.figure_data):
            if not path.exists() or self._arrays(path, ["record"]).get("record", "") != record_hash(metrics["record"]):
                return "evaluate"  # from before spgkit saved it, or half of a later scoring
        return "done"

    def conflict(self, config: dict[str, Any]) -> RunConflict | None:
        """The refusal of ``config`` where the folder holds a run trained with another training
        configuration, naming the fields; None where it holds none, or one trained alike."""
        if not any(p.exists() for p in (self.checkpoint, self.metrics, self.log)):
            return None
        if not self.config.exists():
            changed = ["(no config.json: made by an older spgkit)"]
        else:
            changed = differences(self.read_config()["training"], config["training"], "training")
        if not changed:
            return None
        return RunConflict(f"{self.path} was trained with another configuration ({'; '.join(changed)}); use another --out, or --retrain to replace it")

    def read_config(self) -> dict[str, Any]:
        """``config.json``, checked: a :func:`run_config` with its parts."""
        config = _read_json(self.config)
        if not (isinstance(config, dict) and all(isinstance(config.get(k), dict) for k in ("training", "evaluation"))):
            raise RunFileError(f"{self.config}: not a run configuration (no training and evaluation parts); {FIX}")
        return config

    def clear(self) -> None:
        """Remove every result of this run (its lock stays)."""
        for path in (self.config, self.checkpoint, self.log, self.metrics, self.per_image, self.figure_data, self.snapshots):
            path.unlink(missing_ok=True)

    def save_checkpoint(self, payload: dict) -> None:
        save_checkpoint(self.checkpoint, payload)

    def load_checkpoint(self, arm: str, seed: int, epochs: int) -> dict:
        """The checkpoint to resume ``arm``'s run of ``seed`` (of ``epochs`` epochs) from, checked:
        every part a resumed run reads (the optimiser and scheduler unless it is the last epoch's),
        and that arm and seed."""
        state = load_checkpoint(self.checkpoint)
        if not isinstance(state, dict):
            raise RunFileError(f"{self.checkpoint}: not a checkpoint spgkit can resume from (a {type(state).__name__}, not a dict); {FIX}")
        needed = ["config", "model", "epoch", "history", "arm", "seed"]
        if state.get("epoch") != epochs - 1:  # only the last epoch's goes without them
            needed[2:2] = ["optimizer", "scheduler"]
        missing = [k for k in needed if k not in state]
        if missing:
            raise RunFileError(f"{self.checkpoint}: not a checkpoint spgkit can resume from (no {', '.join(missing)}); {FIX}")
        if (state["arm"], state["seed"]) != (arm, seed):
            raise RunFileError(f"{self.checkpoint}: a checkpoint of arm {state['arm']!r} seed {state['seed']}, not of {arm!r} seed {seed}; {FIX}")
        return state

    def write_snapshots(self, payload: dict) -> None:
        """``snapshots.pt``: the fixed images and what was recorded of them during training."""
        save_checkpoint(self.snapshots, payload)

    def read_snapshots(self) -> dict:
        return load_checkpoint(self.snapshots)

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json``, checked: a finished run's scores, or a diverged run's record."""
        metrics = _read_json(self.metrics)
        needed = ("arm", "seed", "protocol") + (() if isinstance(metrics, dict) and "diverged" in metrics else METRICS)
        missing = [k for k in needed if not isinstance(metrics, dict) or k not in metrics]
        if missing:
            raise RunFileError(f"{self.metrics}: not a run's metrics (no {', '.join(missing)}); {FIX}")
        return metrics

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.metrics, metrics)

    def write_per_image(self, images: dict[str, Any], record: dict[str, Any]) -> None:
        """``per_image.npz``: what each test image scored (:func:`~spgkit.evaluate.evaluate`'s
        ``images``), and the :func:`record_hash` of what it was scored with; first, where
        ``images`` holds ``figures`` (as :func:`~spgkit.train.select_and_test` gives them),
        those in ``figures.npz`` with the same hash (:meth:`read_figure_data`). IoUs stay
        float64, so every ``IoU >= delta`` comparison, and with it every box metric, comes out
        of the file exactly as in ``metrics.json``."""
        stamp = {"record": np.array(record_hash(record))}
        if "figures" in images:
            write_arrays(self.figure_data, {**images["figures"], **stamp})
        write_arrays(self.per_image, {**{k: v for k, v in images.items() if k != "figures"}, **stamp})

    def read_per_image(self) -> dict[str, Any]:
        """``per_image.npz``, checked: readable, every array the report reads, one row per image."""
        arrays = self._arrays(self.per_image)
        rows = {k: len(arrays[k]) for k in PER_IMAGE if k != "iou_thresholds"}
        if len(set(rows.values())) != 1:
            raise RunFileError(f"{self.per_image}: its arrays disagree on the number of images ({rows}); {FIX}")
        arrays["record"] = str(arrays.get("record", ""))
        return arrays

    def read_figure_data(self) -> dict[str, Any]:
        """``figures.npz``, checked: ``map``, each test image's map at feature resolution, in the
        order of ``per_image.npz``; ``mean`` and ``std``, the model's; ``visual/<name>``, what the
        heads offered figures for the first test images (:func:`~spgkit.evaluate.figure_arrays`)."""
        arrays = self._arrays(self.figure_data)
        arrays["record"] = str(arrays.get("record", ""))
        return arrays

    def _arrays(self, path: Path, keys: list[str] | None = None) -> dict[str, Any]:
        """The arrays of ``per_image.npz`` or ``figures.npz`` (only ``keys``, when given), once
        the file is known to be readable and to hold every array of :data:`PER_IMAGE` or
        :data:`FIGURE_DATA`."""
        try:
            with np.load(path, allow_pickle=False) as arrays:
                found = {key: arrays[key] for key in arrays.files if keys is None or key in keys}
                names = arrays.files
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise RunFileError(f"{path}: not readable ({type(exc).__name__}: {exc}); {FIX}") from None
        missing = [k for k in (PER_IMAGE if path == self.per_image else FIGURE_DATA) if k not in names]
        if missing:
            raise RunFileError(f"{path}: lacks {', '.join(missing)}; {FIX}")
        return found

    def write_log(self, history: list[dict[str, float]]) -> None:
        """``log.csv``: one row per epoch, a column per key any row has."""
        write_csv(self.log, history, list(dict.fromkeys(k for row in history for k in row)))

    def read_log(self) -> list[dict[str, str]]:
        """The rows of ``log.csv``; none when it does not exist yet."""
        if not self.log.exists():
            return []
        with open(self.log, newline="") as handle:
            return list(csv.DictReader(handle))


class StudyFolder:
    """A study's output folder: its runs, tables and figures, inside ``out`` whatever the names say
    (they are checked when declared; this is the second line of defence)."""

    def __init__(self, out: str | Path, study: Study):
        root = Path(out).resolve()
        self.path = (root / study.name).resolve()
        if self.path.parent != root:
            raise ValueError(f"study name {study.name!r} leads outside the output folder {out}")
        self.results_csv = self.path / "results.csv"
        self.results_md = self.path / "results.md"
        self.differences_csv = self.path / "differences.csv"
        self.figures = self.path / "figures"
        self.actions: dict[str, int] = {}  #: runs by what :func:`~spgkit.study.run_study` did with them
        self.nodes: dict[tuple[str, int], str] = {}  #: the Ray node of each run, by (arm, seed)

    def run(self, arm: str, seed: int, trial: int | None = None) -> RunFolder:
        """The folder of ``arm``'s run with ``seed`` (``<arm>/seed<seed>``), or of its search's
        ``trial`` (``<arm>/trial<trial>``, :mod:`spgkit.tune`)."""
        run = RunFolder(self.path / arm / (f"seed{seed}" if trial is None else f"trial{trial:03d}"))
        if run.path.resolve().parent.parent != self.path:
            raise ValueError(f"arm name {arm!r} leads outside the study's folder {self.path}")
        return run

    @contextlib.contextmanager
    def reporting(self) -> Iterator[None]:
        """Hold the study's report lock: one process at a time rewrites its tables and figures."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".report.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def clear_reports(self) -> None:
        """Remove the tables and figures, so a report leaves none of a former report's files behind."""
        for path in (self.results_csv, self.results_md, self.differences_csv):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.figures, ignore_errors=True)
