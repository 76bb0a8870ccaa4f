"""Where results live: a run's folder (one arm, one seed) and a study's folder. The layout is
spelled out here and nowhere else.

A run folder records the configuration that produced it (``config.json``), so a run is reused only
for the configuration it was made with: a re-run whose training configuration differs is refused
with the differing fields named (or, when asked, trained again), and one whose evaluation settings
alone differ is evaluated again from its checkpoint, and so is a finished run that has no
``per_image.npz`` (made before spgkit saved one): evaluation is a forward pass over the selection
and test splits, far cheaper than training, and it gives every run the file the report's
intervals and figures read. A lock keeps two processes out of one folder. The layout::

    <out>/<study>/results.csv, results.md, differences.csv, figures/
    <out>/<study>/<arm>/seed<k>/config.json, checkpoint.pt, log.csv, metrics.json, per_image.npz,
                               snapshots.pt, .lock
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from spgkit.config import EXECUTION_FIELDS, Arm, Data, Evaluation, HeadSpec, Study, Training
from spgkit.io import load_checkpoint, read_arrays, read_json, save_checkpoint, write_arrays, write_json, write_text
from spgkit.model import WSOLModel, build_model
from spgkit.plugins import Registry


class RunConflict(ValueError):
    """A run folder holds results of another configuration than the one asked for."""


def run_config(study: Study, arm: Arm, seed: int) -> dict[str, Any]:
    """What one run computes, as plain JSON: ``training`` (everything that changes the trained
    weights) and ``evaluation`` (how they are scored)."""
    training = {k: v for k, v in dataclasses.asdict(study.training).items() if k not in EXECUTION_FIELDS}
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
            },
            "evaluation": dataclasses.asdict(study.evaluation),
        }
    )


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
    "training": {**_field_defaults(Training, "training."), **_field_defaults(Data, "data."), **LEGACY},
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


def load_model(path: str | Path, registry: Registry | None = None) -> tuple[WSOLModel, dict[str, Any]]:
    """A trained model (in eval mode) and its config from a checkpoint written by a run."""
    state = load_checkpoint(path)
    if "config" not in state or "model" not in state:
        raise ValueError(f"{path}: not an spgkit checkpoint (no model config)")
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
        self.snapshots = self.path / "snapshots.pt"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock; a second process gets a one-line error instead of writing beside."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunConflict(f"{self.path}: another spgkit process is running this run; wait for it or use another --out") from None
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield

    def prepare(self, config: dict[str, Any], retrain: bool = False) -> str:
        """Compare ``config`` (from :func:`run_config`) with what the folder holds and say what to do:
        ``"train"`` (nothing usable yet, or a checkpoint to resume from), ``"evaluate"`` (trained with
        this configuration, but scored otherwise or without ``per_image.npz``) or ``"done"``.
        Writes ``config.json`` for a new run.

        A folder trained with another configuration raises :class:`RunConflict` naming the fields,
        unless ``retrain``, which empties it first.
        """
        for stale in self.path.glob(".*.tmp"):  # half-written by a killed process; the target is intact
            stale.unlink()
        made = [p for p in (self.checkpoint, self.metrics, self.log) if p.exists()]
        recorded = read_json(self.config) if self.config.exists() else None
        changed = None
        if recorded is None and made:
            changed = ["(no config.json: made by an older spgkit)"]
        elif recorded is not None and recorded["training"] != config["training"]:
            changed = differences(recorded["training"], config["training"], "training")
        if changed and not retrain:
            raise RunConflict(
                f"{self.path} was trained with another configuration ({'; '.join(changed)}); "
                "use another --out, or --retrain to replace it"
            )
        if changed:
            self.clear()
            made, recorded = [], None
        if recorded is None:
            write_json(self.config, config)
            return "train"
        if not self.metrics.exists():
            return "train"
        if differences(recorded["evaluation"], config["evaluation"], "evaluation"):
            # The old scores go first: a run killed while scoring again must not leave them
            # standing as the results of the new configuration.
            self.metrics.unlink()
            self.per_image.unlink(missing_ok=True)
            write_json(self.config, config)
            return "evaluate"
        if not self.per_image.exists() and "diverged" not in self.read_metrics():
            return "evaluate"  # a diverged run has no final model to score: it stays as recorded
        return "done"

    def clear(self) -> None:
        """Remove every result of this run (its lock stays)."""
        for path in (self.config, self.checkpoint, self.log, self.metrics, self.per_image, self.snapshots):
            path.unlink(missing_ok=True)

    def save_checkpoint(self, payload: dict) -> None:
        save_checkpoint(self.checkpoint, payload)

    def load_checkpoint(self) -> dict:
        return load_checkpoint(self.checkpoint)

    def write_snapshots(self, payload: dict) -> None:
        """``snapshots.pt``: the fixed images and what was recorded of them during training."""
        save_checkpoint(self.snapshots, payload)

    def read_snapshots(self) -> dict:
        return load_checkpoint(self.snapshots)

    def read_metrics(self) -> dict[str, Any]:
        return read_json(self.metrics)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.metrics, metrics)

    def write_per_image(self, images: dict[str, Any]) -> None:
        """``per_image.npz``: what each test image scored (:func:`~spgkit.evaluate.evaluate`'s
        ``images``). IoUs stay float64, so every ``IoU >= delta`` comparison, and with it every
        box metric, comes out of the file exactly as in ``metrics.json``."""
        write_arrays(self.per_image, images)

    def read_per_image(self) -> dict[str, Any]:
        return read_arrays(self.per_image)

    def write_log(self, history: list[dict[str, float]]) -> None:
        """``log.csv``: one row per epoch, a column per key any row has."""
        keys = list(dict.fromkeys(k for row in history for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
        write_text(self.log, buffer.getvalue())

    def read_log(self) -> list[dict[str, str]]:
        """The rows of ``log.csv``; none when it does not exist yet."""
        if not self.log.exists():
            return []
        with open(self.log, newline="") as handle:
            return list(csv.DictReader(handle))


class StudyFolder:
    """A study's output folder: its runs, tables and figures."""

    def __init__(self, out: str | Path, study: Study):
        self.path = Path(out) / study.name
        self.results_csv = self.path / "results.csv"
        self.results_md = self.path / "results.md"
        self.differences_csv = self.path / "differences.csv"
        self.figures = self.path / "figures"

    def run(self, arm: str, seed: int) -> RunFolder:
        return RunFolder(self.path / arm / f"seed{seed}")

    def clear_reports(self) -> None:
        """Remove the tables and figures, so a report on a subset of arms leaves none of a former
        report's files behind."""
        for path in (self.results_csv, self.results_md, self.differences_csv):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.figures, ignore_errors=True)
