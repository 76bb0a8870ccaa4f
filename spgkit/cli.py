"""The ``spgkit`` command: run studies, list plugins, evaluate checkpoints, score maps made elsewhere,
localize images."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from spgkit.config import MAX_IMAGE_SIZE

EPILOG = "Set SPGKIT_DEBUG=1 to see a traceback instead of a one-line error."

#: Bounds of the numeric arguments, each with the reason a value outside them is refused.
MAX_THRESHOLDS = 10_000
THRESHOLDS_REASON = (
    "more only costs time and memory: the benchmark reports with 100 and selects with 1000, "
    "and its uint8 maps have 256 levels"
)
IMAGE_SIZE_REASON = "a map needs 2 x 2 pixels to hold a region; one 4096 x 4096 map is already 64 MiB"
CAM_THRESHOLD_HELP = (
    "CAM threshold in [0, 1] of GT-known/Top-1/Top-5 Loc, chosen on held-out data, never on the split scored"
)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (``spgkit COMMAND: error: ...``), status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value


def _json_value(text: str) -> tuple[str, object]:
    key, value = _key_value(text)
    try:
        return key, json.loads(value)  # numbers, booleans, lists
    except json.JSONDecodeError:
        return key, value


def _add_shorthands(run: argparse.ArgumentParser) -> None:
    """One flag per entry of :data:`spgkit.study.SHORTHANDS`, typed by the field it sets."""
    from spgkit.config import PROTOCOLS
    from spgkit.study import SHORTHANDS, field_type

    helps = {
        "device": "auto, cpu, cuda, cuda:N",
        "seeds": "seeds to run",
        "data_root": "dataset root folder",
        "max_train": "use at most this many training images",
        "max_eval": "use at most this many selection/test images",
        "protocol": "evaluation protocol: " + "; ".join(f"'{k}' = {v}" for k, v in PROTOCOLS.items()),
    }
    for name, path in SHORTHANDS.items():
        hint = field_type(path)
        flag = "--" + name.replace("_", "-")
        text = f"{helps[name]} (sets {path})" if name in helps else f"sets {path}"
        if hint is bool:
            run.add_argument(flag, action="store_true", default=None, help=text)
        elif name == "seeds":
            run.add_argument(flag, type=int, nargs="+", help=text)
        elif name == "protocol":
            run.add_argument(flag, choices=sorted(PROTOCOLS), help=text)
        else:
            run.add_argument(flag, type=hint if hint in (int, float) else str, help=text)


def _add_plugin_argument(parser: argparse.ArgumentParser) -> None:
    """``-p FILE``: a head in one file, registered beside the installed plugins."""
    parser.add_argument("-p", "--plugin", dest="plugins", type=Path, action="append", default=[], metavar="FILE",
                        help="a Python file whose @spgkit.hookimpl functions register heads (backbones, datasets) "
                             "beside the installed plugins, e.g. my_head.py (repeatable)")  # fmt: skip


def _add_study_arguments(run: argparse.ArgumentParser, arms_help: str) -> None:
    """What ``run`` and ``tune`` share: the study, its overrides, the output and the executor."""
    run.add_argument("study", type=Path, help="a study file defining STUDY = Study(...), e.g. studies/quickstart.py")
    run.add_argument("--out", type=Path, default=Path("runs"), help="output root (default: runs/); results go to OUT/<study name>/")
    _add_plugin_argument(run)
    run.add_argument("--set", dest="settings", type=_key_value, action="append", default=[], metavar="FIELD=VALUE",
                     help="set any field of the study by its dotted path, e.g. training.weight_decay=5e-4, "
                          "data.args.num_images=500, arms.spg.heads.spg_b.args.width=64 (repeatable)")  # fmt: skip
    _add_shorthands(run)
    run.add_argument("--arms", nargs="+", help=arms_help)
    run.add_argument("--retrain", action="store_true", help="train the runs again from scratch, replacing what their folders hold")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    where = run.add_argument_group("where the runs train (see the docs' page on clusters)")
    where.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: one after another in this process (default); ray: each run a Ray task (pip install 'spgkit[ray]')")  # fmt: skip
    where.add_argument("--address", help="ray: the cluster (auto, ray://HOST:10001, HOST:6379; default: start a local instance)")
    where.add_argument("--cpus-per-run", type=float, help="ray: CPU cores each run reserves, and its torch threads (default 1)")
    where.add_argument("--gpus-per-run", type=float, help="ray: GPUs each run reserves; fractions share a GPU, 0.25 = four a GPU (default 0)")
    where.add_argument("--max-retries", type=int, help="ray: how often a run whose worker died starts again, resuming (default 3)")


def _add_scoring_arguments(parser: argparse.ArgumentParser, protocol_help: str) -> None:
    """The flags ``evaluate`` and ``score`` share: the dataset split, the metrics' settings, the outputs."""
    from spgkit.config import PROTOCOLS

    parser.add_argument("--data", required=True, help="a registered dataset (`spgkit datasets` lists them)")
    parser.add_argument("--root", type=Path, help="dataset root, for datasets read from files")
    parser.add_argument("--data-arg", type=_json_value, action="append", default=[], metavar="KEY=VALUE", help="further reader arguments (repeatable)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch, at least 1 (default: 64)")
    parser.add_argument("--thresholds", type=int, default=100,
                        help=f"number of CAM thresholds in [0, 1) of MaxBoxAcc, MaxBoxAccV2 and PxAP, 1 to {MAX_THRESHOLDS:,} (default: 100)")  # fmt: skip
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="benchmark", help=protocol_help)
    parser.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    parser.add_argument("--csv", type=Path, help="also write the metrics to this CSV file (a header row, then one row)")
    _add_plugin_argument(parser)


def _add_tune(sub) -> None:
    """``spgkit tune``: the study's flags, the number of trials and the store."""
    tune = sub.add_parser(
        "tune",
        help="search each arm's hyperparameters on the selection split, then train and report the best with every seed",
        description="The WSOL benchmark's protocol: every arm's hyperparameters searched alike (random search, its "
        "space from the study's `search` or the heads' own), each trial an ordinary run trained once and scored on the "
        "selection split (MaxBoxAccV2; PxAP where masks exist), each arm's best trained again with the study's seeds "
        "and reported on test. Trials go to OUT/<study>-search/ (trials.csv, search.md, figures/trials.png), the "
        "tuned study to OUT/<study>-tuned/. Killed and run again, it continues the same search. Needs Optuna: "
        "pip install 'spgkit[tune]'.",
        epilog=EPILOG,
    )  # fmt: skip
    _add_study_arguments(tune, "tune only these arms (the tuned study then has only them)")
    tune.add_argument("--trials", type=int, help="configurations per arm (sets search.trials; default: the study's, 30)")
    tune.add_argument("--storage", help="where Optuna stores the trials: a journal file, or an Optuna storage URL "
                      "(sqlite:///file.db, postgresql://...) that many machines share (default: OUT/<study>-search/trials.journal)")  # fmt: skip


def _add_evaluate(sub, protocol_help: str) -> None:
    """``spgkit evaluate``: a checkpoint scored on a dataset split."""
    ev = sub.add_parser(
        "evaluate",
        help="classification and localization metrics of a checkpoint",
        description="Score a checkpoint on a dataset split. GT-known/Top-1/Top-5 Loc are taken at the CAM threshold "
        "the run chose on its selection split (its metrics.json beside the checkpoint) or at --cam-threshold; "
        "without either they are left out and the threshold-free metrics (MaxBoxAcc, MaxBoxAccV2, PxAP) are "
        "reported, as `spgkit score` does: the two commands give the same numbers for the same maps and arguments. "
        "The JSON records the cam_threshold used and where it came from. The dataset's classes are matched to the "
        "checkpoint's by name. A diverged run's checkpoint (its last good one) is evaluated, with a notice.",
        epilog=EPILOG,
    )  # fmt: skip
    ev.add_argument("checkpoint", type=Path, help="a checkpoint.pt written by `spgkit run`")
    _add_scoring_arguments(ev, protocol_help)
    ev.add_argument("--cam-threshold", type=float, help=CAM_THRESHOLD_HELP + " (default: the run's, chosen on its selection split; none: Loc left out)")
    ev.add_argument("--max-images", type=int, metavar="N",
                    help="score at most N images, drawn as a study's data.max_eval draws them, so a run's checkpoint "
                         "with its study's cap gives the run's numbers")  # fmt: skip
    ev.add_argument("--device", default="auto")


def _add_score(sub, protocol_help: str) -> None:
    """``spgkit score``: maps made by any code, scored as ``evaluate`` scores."""
    sc = sub.add_parser(
        "score",
        help="the metrics of `evaluate` for localization maps made by any code, read from .npy/.npz files",
        description="Score the maps of the ground-truth classes, one 2-D array of any size per image, keyed by the "
        "dataset's image id (`FOLDER/<image id>.npy`, or the entry <image id> of one .npz), with the metrics and "
        "protocols of `spgkit evaluate`: each map is resized to --image-size and normalised as the protocol says "
        "(min-max normalisation is scale invariant: a map times 1e300 scores as the map). There is no trained CAM "
        "threshold here: GT-known/Top-1/Top-5 Loc are reported only at --cam-threshold (choose it on held-out data, "
        "never on the split scored); without it the threshold-free metrics (MaxBoxAcc, MaxBoxAccV2, PxAP) are "
        "reported, exactly as `spgkit evaluate` reports them. The JSON records the cam_threshold used. "
        "--center-baseline scores the WSOL benchmark's centre baseline instead: one centred Gaussian map "
        "(sigma 1/4 of the side) for every image.",
        epilog=EPILOG,
    )  # fmt: skip
    sc.add_argument("--maps", type=Path, help="a folder of <image id>.npy files or one .npz file: a 2-D map per image")
    sc.add_argument("--logits", type=Path, help="class scores stored the same way, one 1-D vector per image: adds top-1/top-5 accuracy (and Loc, with --cam-threshold)")
    sc.add_argument("--center-baseline", action="store_true", help="score a centred Gaussian map for every image (no --maps): the floor any method must clear")
    sc.add_argument("--image-size", type=int, default=224,
                    help=f"side of the square the images, boxes, masks and maps are resized to, 2 to {MAX_IMAGE_SIZE} (default: 224, the WSOL benchmark's)")  # fmt: skip
    _add_scoring_arguments(sc, protocol_help)
    sc.add_argument("--cam-threshold", type=float, help=CAM_THRESHOLD_HELP + " (default: none, Loc left out)")


def _add_localize(sub, protocol_help: str) -> None:
    """``spgkit localize``: maps and boxes drawn for image files."""
    from spgkit.config import PROTOCOLS

    loc = sub.add_parser(
        "localize",
        help="draw maps and boxes for images with a checkpoint",
        description="Classify each image, draw its map and the box at the CAM threshold. Photos are read upright "
        "(their EXIF orientation applied), so boxes are in the frame a viewer shows.",
        epilog=EPILOG,
    )  # fmt: skip
    loc.add_argument("checkpoint", type=Path, help="a checkpoint.pt written by `spgkit run`")
    loc.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files")
    loc.add_argument("--out", type=Path, required=True, help="folder for <image>_overlay.png and boxes.json")
    loc.add_argument("--threshold", type=float,
                     help="CAM threshold in [0, 1] for the box (default: the one the run chose on its selection split; "
                          "required where the checkpoint has no finished run beside it)")  # fmt: skip
    loc.add_argument("--protocol", choices=sorted(PROTOCOLS), default="benchmark", help="how the map is resized and the box found; " + protocol_help)
    loc.add_argument("--device", default="auto")
    _add_plugin_argument(loc)


def build_parser() -> argparse.ArgumentParser:
    from spgkit.config import PROTOCOLS

    protocol_help = "evaluation protocol (default: benchmark): " + "; ".join(f"'{k}' = {v}" for k, v in PROTOCOLS.items())
    parser = _Parser(
        prog="spgkit",
        description="Weakly-supervised object localization studies: SPG, ACoL and CAM as pluggable heads.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="check a study, train every arm and seed, then write its table and figures", epilog=EPILOG)
    _add_study_arguments(run, "run only these arms (the report still covers every finished run of the study)")
    _add_tune(sub)
    for kind, what in (("heads", "guidance heads"), ("backbones", "backbones"), ("datasets", "dataset readers")):
        _add_plugin_argument(sub.add_parser(kind, help=f"list registered {what} and the distribution (or file) providing each"))
    _add_evaluate(sub, protocol_help)
    _add_score(sub, protocol_help)
    _add_localize(sub, protocol_help)
    return parser


def _registry(args, study=None):
    """The installed plugins', the study's plugin files' and ``-p`` files' heads, backbones and readers."""
    from spgkit.plugins import Registry

    return Registry(plugins=(*(study.plugins if study is not None else ()), *args.plugins))


#: How ``spgkit run`` names what it did with each run (:attr:`spgkit.runs.RunFolder.action`).
ACTIONS = {"train": "trained", "evaluate": "scored again", "done": "reused", "diverged": "diverged"}


def _study(args, extra: dict | None = None):
    """The study file with its command-line changes (shorthands, then ``--set``)."""
    from spgkit.study import SHORTHANDS, load_study, override

    study = load_study(args.study)
    shorthands = {path: getattr(args, name) for name, path in SHORTHANDS.items() if getattr(args, name) is not None}
    if "data.args.root" in shorthands:
        shorthands["data.args.root"] = str(shorthands["data.args.root"])
    if "seeds" in shorthands:
        shorthands["seeds"] = tuple(shorthands["seeds"])
    return override(study, {**shorthands, **(extra or {}), **dict(args.settings)})


def _executor(args):
    from spgkit.executors import make_executor

    options = {"address": args.address, "cpus_per_run": args.cpus_per_run, "gpus_per_run": args.gpus_per_run, "max_retries": args.max_retries}
    for name in ("cpus_per_run", "gpus_per_run", "max_retries"):
        if options[name] is not None and not 0 <= options[name] < 10_000:
            raise CLIError(f"--{name.replace('_', '-')} must be in [0, 10000), not {options[name]}")
    return make_executor(args.executor, **options)


def _print_report(folder, start: float) -> None:
    if folder.results_md.exists():
        print(folder.results_md.read_text())
        print(f"tables: {folder.results_csv}, {folder.results_md}; figures: {folder.figures}")
    done = ", ".join(f"{n} {ACTIONS[action]}" for action, n in sorted(folder.actions.items()))
    print(f"runs: {done}; wall time: {time.perf_counter() - start:.0f} s")


def cmd_run(args) -> int:
    from spgkit.study import run_study

    study = _study(args)
    start = time.perf_counter()
    folder = run_study(
        study, args.out, registry=_registry(args, study), progress=not args.no_progress, retrain=args.retrain, where=str(args.study), arms=args.arms,
        executor=_executor(args),
    )  # fmt: skip
    import torch.distributed as dist

    if dist.is_initialized():  # under torchrun: rank 0 alone reports
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    _print_report(folder, start)
    return 0


def cmd_tune(args) -> int:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise CLIError("spgkit tune needs Optuna: pip install 'spgkit[tune]' (or pip install optuna)") from None
    from spgkit.tune import tune

    if args.trials is not None and not 1 <= args.trials <= 100_000:
        raise CLIError(f"--trials must be in 1..100000, not {args.trials}")
    study = _study(args, {"search.trials": args.trials} if args.trials is not None else None)
    start = time.perf_counter()
    result = tune(
        study, args.out, registry=_registry(args, study), executor=_executor(args), storage=args.storage, progress=not args.no_progress,
        retrain=args.retrain, arms=args.arms, where=str(args.study),
    )  # fmt: skip
    trials = ", ".join(f"{n} {ACTIONS[action]}" for action, n in sorted(result.actions.items()))
    print(f"search: {result.folder.path / 'search.md'}, {result.folder.path / 'trials.csv'}, {result.folder.figures / 'trials.png'}; trials: {trials}")
    _print_report(result.tuned, start)
    return 0


def cmd_list(args) -> int:
    kind = args.command
    table = getattr(_registry(args), kind)
    if not table:
        print(f"no {kind} registered")
        return 0
    width = max(len(name) for name in table)
    for name, entry in sorted(table.items()):
        doc = (entry.obj.__doc__ or "").strip().splitlines()
        print(f"{name:<{width}}  from {entry.plugin}" + (f"  -- {doc[0]}" if doc else ""))
    if kind == "backbones":
        from spgkit.plugins import CORE

        print(f"{'timm:<model>':<{width}}  from {CORE}  -- any model timm.list_models() knows: timm:resnet18, timm:deit_tiny_patch16_224...")
    return 0


def _whole(value) -> bool:
    from spgkit.config import conforms

    return conforms(value, int)


def _finite(value) -> bool:
    from spgkit.config import conforms

    return conforms(value, float)


def _check_range(value, flag: str, low: int, high: int | None = None, reason: str = "") -> None:
    """CLIError unless the integer ``value`` of ``flag`` lies in ``low..high``."""
    if value is None:
        return
    if value < low or (high is not None and value > high):
        bound = f"between {low:,} and {high:,}" if high is not None else f"at least {low:,}"
        raise CLIError(f"{flag} must be {bound}, not {value}" + (f" ({reason})" if reason else ""))


def _check_threshold(value, flag: str) -> None:
    """CLIError unless ``value`` (a CAM threshold) is a number in [0, 1]."""
    if value is not None and not (_finite(value) and 0 <= value <= 1):
        raise CLIError(f"{flag} must be a number in [0, 1] (a share of the normalised map's range), not {value}")


def check_numbers(args) -> None:
    """The numeric arguments of ``evaluate``, ``score`` and ``localize``, checked before anything
    is read: one line naming the argument, with the reason for its bounds."""
    if args.command in ("evaluate", "score"):
        _check_range(args.batch_size, "--batch-size", 1)
        _check_range(args.thresholds, "--thresholds", 1, MAX_THRESHOLDS, THRESHOLDS_REASON)
        _check_threshold(args.cam_threshold, "--cam-threshold")
    if args.command == "score":
        _check_range(args.image_size, "--image-size", 2, MAX_IMAGE_SIZE, IMAGE_SIZE_REASON)
    if args.command == "evaluate":
        _check_range(args.max_images, "--max-images", 1)
    if args.command == "localize":
        _check_threshold(args.threshold, "--threshold")


def _load_model(path: Path, registry):
    """The checkpoint's model and config (its config checked by :func:`~spgkit.runs.load_model`
    before anything is built); every failure to rebuild the model is one line that names the file."""
    from spgkit.plugins import PluginError
    from spgkit.runs import load_model

    if not path.is_file() and (path.parent / "metrics.json").is_file():
        try:
            diverged = json.loads((path.parent / "metrics.json").read_text(encoding="utf-8")).get("diverged")
        except (OSError, ValueError, AttributeError):
            diverged = None
        if diverged:
            what = " ".join(str(diverged).split())
            raise CLIError(f"{path}: no checkpoint: its run diverged before its first epoch ended ({what}); there is nothing to use")
    try:
        return load_model(path, registry)
    except (PluginError, ValueError, TypeError, RuntimeError, KeyError, IndexError, AttributeError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise CLIError(message if message.startswith(str(path)) else f"{path}: its model cannot be rebuilt ({message})") from None


def _run_record(checkpoint: Path, command: str, given: float | None, flag: str) -> tuple[float | None, str | None, str | None]:
    """The CAM threshold to use beside ``checkpoint``, where it came from, and a notice for
    stderr: ``given`` (the value of ``flag``), else the one the run chose on its selection split
    (``metrics.json`` beside the checkpoint), else none. A run that diverged after this
    checkpoint (its last good one) chose none: the notice says so, in one line. A run record
    that cannot be read is refused in one line naming it, unless ``given`` makes it unneeded."""
    metrics = checkpoint.parent / "metrics.json"
    if not metrics.exists():
        return (given, flag, None) if given is not None else (None, None, None)
    try:
        record = json.loads(metrics.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError(f"a {type(record).__name__}, not an object")
    except (OSError, ValueError) as exc:
        if given is not None:
            return given, flag, None
        reason = " ".join(str(exc).split())
        raise CLIError(f"{metrics}: not a readable run record ({reason}); pass {flag}, or delete the run and train it again") from None
    if "diverged" in record:
        what = " ".join(str(record["diverged"]).split())
        note = (
            f"spgkit {command}: note: the run of {checkpoint} diverged after this checkpoint, its last good one, "
            f"which is used as it is ({what}); it has no CAM threshold chosen in training"
        )
        return (given, flag, note) if given is not None else (None, None, note)
    if given is not None:
        return given, flag, None
    chosen = record.get("cam_threshold")
    if not (_finite(chosen) and 0 <= chosen <= 1):
        found = "has no cam_threshold" if chosen is None else f"has cam_threshold {chosen!r}, not a number in [0, 1]"
        raise CLIError(f"{metrics}: {found} (an incomplete run record); pass {flag}, or delete the run and train it again")
    return float(chosen), str(metrics), None


def _check_reader_arguments(reader, reader_args: dict) -> None:
    """``--data-arg`` values checked against the reader: numbers finite, whole numbers where the
    reader's default is one, an ``image_size`` within bounds. One line naming the argument."""
    import inspect

    try:
        params = inspect.signature(reader).parameters
    except (TypeError, ValueError):
        params = {}
    for key, value in reader_args.items():
        flag = f"--data-arg {key}"
        if isinstance(value, float) and not _finite(value):
            raise CLIError(f"{flag}: {value} is not a finite number")
        default = params[key].default if key in params else None
        if _whole(default) and not _whole(value):
            raise CLIError(f"{flag}: expected a whole number, got {value!r}")
        if key == "image_size" and _whole(value):
            _check_range(value, flag, 2, MAX_IMAGE_SIZE, IMAGE_SIZE_REASON)


def _open_dataset(args, registry, transform):
    """The split that ``--data``, ``--root``, ``--data-arg`` and ``--split`` name, read through ``transform``."""
    from spgkit.plugins import check_arguments

    reader = registry.dataset(args.data)
    reader_args = dict(args.data_arg)
    _check_reader_arguments(reader, reader_args)
    if args.root is not None:
        reader_args["root"] = str(args.root)
    check_arguments(reader, {"split": args.split, "transform": None, **reader_args}, f"dataset {args.data!r}")
    return reader(split=args.split, transform=transform, **reader_args)


class _Relabelled:
    """A dataset whose labels are renumbered (``mapping[label]``) into another class order: a
    checkpoint's, matched by name."""

    def __init__(self, dataset, mapping: list[int], class_names: list[str]):
        self.dataset, self.mapping = dataset, mapping
        self.class_names, self.num_classes = list(class_names), len(class_names)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample = dict(self.dataset[index])
        sample["label"] = self.mapping[int(sample["label"])]
        return sample


def _some(names) -> str:
    names = sorted(names)
    return ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")


def match_classes(dataset, config: dict, checkpoint: Path, what: str):
    """``dataset`` with its labels in the checkpoint's class order: matched by name where both
    name their classes (a folder whose classes are listed in another order scores as the same
    folder), by count otherwise. Classes that differ by name or count are refused in one line."""
    trained = config.get("class_names")
    names = getattr(dataset, "class_names", None)
    count = dataset.num_classes
    if trained is None or names is None or len(set(trained)) != len(trained) or len(set(map(str, names))) != len(names):
        if count != config["num_classes"]:
            raise CLIError(f"{checkpoint} was trained for {config['num_classes']} classes, but {what} has {count}")
        return dataset
    names = [str(n) for n in names]
    if set(names) != set(trained):
        missing, extra = set(trained) - set(names), set(names) - set(trained)
        counts = f"was trained for {len(trained)} classes, but {what} has {len(names)}" if len(names) != len(trained) else (
            f"and {what} name different classes"
        )
        detail = "; ".join(
            part for part in (
                f"{len(missing)} of the checkpoint's are not in the data ({_some(missing)})" if missing else "",
                f"{len(extra)} of the data's are not in the checkpoint ({_some(extra)})" if extra else "",
            ) if part
        )  # fmt: skip
        raise CLIError(f"{checkpoint} {counts}: {detail}")
    if names == list(trained):
        return dataset
    index = {name: k for k, name in enumerate(trained)}
    return _Relabelled(dataset, [index[name] for name in names], trained)


def _report(args, metrics: dict, cam_threshold: float | None, source: str | None) -> None:
    """Print the metrics, and write them where ``--json`` and ``--csv`` say, with the protocol,
    the CAM threshold used (None: none, Loc left out) and where it came from."""
    metrics["protocol"] = args.protocol
    metrics["cam_threshold"] = cam_threshold
    metrics["cam_threshold_from"] = source
    for key, value in metrics.items():
        print(f"{key:>28}: {value:.4f}" if isinstance(value, float) else f"{key:>28}: {value}")
    if cam_threshold is None:
        flag = "--threshold" if args.command == "localize" else "--cam-threshold"
        print(f"no CAM threshold: GT-known/Top-1/Top-5 Loc left out (pass {flag}, chosen on held-out data)")
    if args.json:
        from spgkit.io import write_json

        write_json(args.json, metrics)
    if args.csv:
        from spgkit.io import write_csv

        write_csv(args.csv, [metrics], list(metrics))


def cmd_evaluate(args) -> int:
    from spgkit.data import eval_transform
    from spgkit.evaluate import evaluate
    from spgkit.distributed import resolve_device
    from spgkit.splits import cap

    registry = _registry(args)
    device = resolve_device(args.device)
    model, config = _load_model(args.checkpoint, registry)
    cam_threshold, source, note = _run_record(args.checkpoint, "evaluate", args.cam_threshold, "--cam-threshold")
    dataset = _open_dataset(args, registry, eval_transform(config["image_size"], config["mean"], config["std"], config["resize"]))
    dataset = match_classes(dataset, config, args.checkpoint, f"{args.data} split {args.split!r}")
    if args.max_images is not None:
        dataset = cap(dataset, args.max_images)  # the very draw of a study's data.max_eval
    if note:
        print(note, file=sys.stderr)
    metrics = evaluate(
        model.to(device),
        dataset,
        device,
        batch_size=args.batch_size,
        thresholds=args.thresholds,
        cam_threshold=cam_threshold,
        protocol=args.protocol,
        progress=True,
    )
    _report(args, metrics, cam_threshold, source)
    return 0


def cmd_score(args) -> int:
    from spgkit.data import eval_transform
    from spgkit.score import center_baseline, score

    if args.center_baseline and (args.maps is not None or args.logits is not None):
        raise CLIError("--center-baseline scores a centred Gaussian map of its own: give it no --maps or --logits")
    if not args.center_baseline and args.maps is None:
        raise CLIError("--maps is required (or --center-baseline, for the centre baseline)")
    source = None if args.cam_threshold is None else "--cam-threshold"
    # The maps are made already, so no pixel is looked at and any normalisation does: what matters is
    # the size the images, boxes and masks are resized to.
    dataset = _open_dataset(args, _registry(args), eval_transform(args.image_size))
    common = dict(batch_size=args.batch_size, thresholds=args.thresholds, cam_threshold=args.cam_threshold, protocol=args.protocol, progress=True)
    if args.center_baseline:
        metrics = center_baseline(dataset, **common)
        metrics["maps"] = "centre baseline (a centred Gaussian, sigma 1/4 of the side)"
    else:
        metrics = score(dataset, args.maps, args.logits, what=f"{args.data} split {args.split!r}", **common)
    _report(args, metrics, args.cam_threshold, source)
    return 0


def overlay_names(paths: list[Path]) -> list[str]:
    """``<stem>_overlay.png`` per image; images that share a stem get ``-2``, ``-3``... so none
    overwrites another."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        suffix = "" if seen[path.stem] == 1 else f"-{seen[path.stem]}"
        names.append(f"{path.stem}{suffix}_overlay.png")
    return names


def load_upright(path: Path):
    """An image file as uint8 RGB (H, W, 3) in the frame a viewer shows: its EXIF orientation
    applied (``PIL.ImageOps.exif_transpose``). For ``localize`` only: datasets are read as the
    WSOL benchmark reads them, in the stored frame (:func:`~spgkit.data.base.load_rgb`)."""
    import numpy as np
    from PIL import Image, ImageOps

    from spgkit.data.base import load_rgb

    rgb = load_rgb(path)  # every mode, and every decoding error named, as the readers do
    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 -- a file load_rgb decoded but whose EXIF is unreadable: as stored
        return rgb
    if orientation in (None, 1):
        return rgb
    upright = Image.fromarray(rgb)
    upright.getexif()[0x0112] = orientation
    return np.asarray(ImageOps.exif_transpose(upright))


def cmd_localize(args) -> int:
    from spgkit.data import image_transform
    from spgkit.io import write_json
    from spgkit.distributed import resolve_device

    device = resolve_device(args.device)
    model, config = _load_model(args.checkpoint, _registry(args))
    model.to(device)
    threshold, _, note = _run_record(args.checkpoint, "localize", args.threshold, "--threshold")
    if threshold is None:
        why = "its run diverged after this checkpoint" if note else "no finished run beside it"
        raise CLIError(f"{args.checkpoint}: no CAM threshold was chosen for it ({why}); pass --threshold")
    if note:
        print(note, file=sys.stderr)
    names = config.get("class_names") or [str(k) for k in range(config["num_classes"])]
    transform = image_transform(config["image_size"], config["mean"], config["std"], config["resize"])
    results = {}
    for path, name in zip(args.images, overlay_names(args.images)):
        found = _localize_image(model, transform, path, args.out / name, threshold, names, config["image_size"], args.protocol, device)
        results[str(path)] = found
        box = found["box_xyxy"]
        print(f"{path}: {found['class_name']} ({found['probability']:.2f}) box {None if box is None else [round(v, 1) for v in box]}")
    write_json(args.out / "boxes.json", results)
    print(f"wrote {len(results)} overlay(s) and {args.out / 'boxes.json'}")
    return 0


def _localize_image(model, transform, path: Path, overlay: Path, threshold: float, names: list[str], size: int, protocol: str, device) -> dict:
    """Classify one image file, draw its map and box into ``overlay``; what ``boxes.json`` records of it."""
    import torch
    from torchvision import tv_tensors

    from spgkit.evaluate import predict_maps
    from spgkit.figures import localize_figure
    from spgkit.localization import largest_region_box
    from spgkit.boxes import rescale

    rgb = load_upright(path)
    height, width = rgb.shape[:2]
    tensor = transform(tv_tensors.Image(torch.tensor(rgb).permute(2, 0, 1)))
    out, maps = predict_maps(model, tensor[None].to(device), protocol=protocol)
    label = int(out.logits.argmax(1))
    score = float(out.logits.softmax(1)[0, label])
    heat = maps[0].cpu().numpy()
    boxes = rescale(largest_region_box(heat, threshold, protocol=protocol), (size, size), (height, width))
    localize_figure(rgb, heat, boxes, f"{names[label]} ({score:.2f})", overlay)
    # boxes.json holds at most one box: its row, or JSON's null for none
    box = boxes[0].tolist() if len(boxes) else None
    return {"class_index": label, "class_name": names[label], "probability": score, "threshold": threshold,
            "box_xyxy": box, "image_size": [width, height], "overlay": str(overlay)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from spgkit.executors import ExecutorError
    from spgkit.config import ConfigError
    from spgkit.data import DataError
    from spgkit.plugins import PluginError
    from spgkit.runs import RunConflict
    from spgkit.study import StudyError
    from spgkit.train import TrainingDiverged

    user_errors = (
        CLIError, ConfigError, StudyError, PluginError, DataError, RunConflict, TrainingDiverged, ExecutorError,
        OSError, ValueError, TypeError, ImportError,
    )  # fmt: skip
    handlers = {"run": cmd_run, "tune": cmd_tune, "evaluate": cmd_evaluate, "score": cmd_score, "localize": cmd_localize}
    debug = bool(os.environ.get("SPGKIT_DEBUG"))
    try:
        check_numbers(args)
        if args.command in ("heads", "backbones", "datasets"):
            return cmd_list(args)
        return handlers[args.command](args)
    except KeyboardInterrupt:
        if debug:
            raise
        # Every file spgkit writes is written whole or not at all, and runs resume from their
        # last checkpoint: the same command picks up where this one stopped.
        print(f"spgkit {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except (*user_errors, MemoryError) as exc:
        if debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, MemoryError):
            message = f"out of memory ({message}); use smaller images, batches or fewer thresholds"
        print(f"spgkit {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
