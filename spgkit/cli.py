"""The ``spgkit`` command: run studies, list plugins, evaluate checkpoints, score maps made elsewhere,
localize images."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EPILOG = "Set SPGKIT_DEBUG=1 to see a traceback instead of a one-line error."


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


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


def _add_scoring_arguments(parser: argparse.ArgumentParser, protocol_help: str) -> None:
    """The flags ``evaluate`` and ``score`` share: the dataset split, the metrics' settings, the outputs."""
    from spgkit.config import PROTOCOLS

    parser.add_argument("--data", required=True, help="a registered dataset (`spgkit datasets` lists them)")
    parser.add_argument("--root", type=Path, help="dataset root, for datasets read from files")
    parser.add_argument("--data-arg", type=_json_value, action="append", default=[], metavar="KEY=VALUE", help="further reader arguments (repeatable)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--thresholds", type=int, default=100, help="number of CAM thresholds in [0, 1)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="benchmark", help=protocol_help)
    parser.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    parser.add_argument("--csv", type=Path, help="also write the metrics to this CSV file (a header row, then one row)")


def build_parser() -> argparse.ArgumentParser:
    from spgkit.config import PROTOCOLS

    protocol_help = "evaluation protocol (default: benchmark): " + "; ".join(f"'{k}' = {v}" for k, v in PROTOCOLS.items())
    parser = argparse.ArgumentParser(
        prog="spgkit",
        description="Weakly-supervised object localization studies: SPG, ACoL and CAM as pluggable heads.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="check a study, train every arm and seed, then write its table and figures", epilog=EPILOG)
    run.add_argument("study", type=Path, help="a study file defining STUDY = Study(...), e.g. studies/quickstart.py")
    run.add_argument("--out", type=Path, default=Path("runs"), help="output root (default: runs/); results go to OUT/<study name>/")
    run.add_argument("--set", dest="settings", type=_key_value, action="append", default=[], metavar="FIELD=VALUE",
                     help="set any field of the study by its dotted path, e.g. training.weight_decay=5e-4, "
                          "data.args.num_images=500, arms.spg.heads.spg_b.args.width=64 (repeatable)")  # fmt: skip
    _add_shorthands(run)
    run.add_argument("--arms", nargs="+", help="run and report only these arms")
    run.add_argument("--retrain", action="store_true", help="replace runs trained with another configuration instead of refusing")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    sub.add_parser("heads", help="list registered guidance heads and the distribution providing each")
    sub.add_parser("backbones", help="list registered backbones and the distribution providing each")
    sub.add_parser("datasets", help="list registered dataset readers and the distribution providing each")

    ev = sub.add_parser("evaluate", help="classification and localization metrics of a checkpoint", epilog=EPILOG)
    ev.add_argument("checkpoint", type=Path, help="a checkpoint.pt written by `spgkit run`")
    _add_scoring_arguments(ev, protocol_help)
    ev.add_argument("--cam-threshold", type=float, help="threshold for GT-known/Top-1 Loc (default: the one chosen in training)")
    ev.add_argument("--device", default="auto")

    sc = sub.add_parser(
        "score",
        help="the metrics of `evaluate` for localization maps made by any code, read from .npy/.npz files",
        description="Score the maps of the ground-truth classes, one 2-D array of any size per image, keyed by the "
        "dataset's image id (`FOLDER/<image id>.npy`, or the entry <image id> of one .npz), with the metrics and "
        "protocols of `spgkit evaluate`: each map is resized to --image-size and normalised as the protocol says.",
        epilog=EPILOG,
    )  # fmt: skip
    sc.add_argument("--maps", type=Path, required=True, help="a folder of <image id>.npy files or one .npz file: a 2-D map per image")
    sc.add_argument("--logits", type=Path, help="class scores stored the same way, one 1-D vector per image: adds top-1/top-5 accuracy and Loc")
    sc.add_argument("--image-size", type=int, default=224, help="side of the square the images, boxes, masks and maps are resized to (default: 224, the WSOL benchmark's)")
    _add_scoring_arguments(sc, protocol_help)
    sc.add_argument("--cam-threshold", type=float, default=0.2, help="threshold for GT-known/Top-1 Loc (default: 0.2)")

    loc = sub.add_parser("localize", help="draw maps and boxes for images with a checkpoint", epilog=EPILOG)
    loc.add_argument("checkpoint", type=Path, help="a checkpoint.pt written by `spgkit run`")
    loc.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files")
    loc.add_argument("--out", type=Path, required=True, help="folder for <image>_overlay.png and boxes.json")
    loc.add_argument("--threshold", type=float, help="CAM threshold for the box (default: the one chosen in training)")
    loc.add_argument("--protocol", choices=sorted(PROTOCOLS), default="benchmark", help="how the map is resized and the box found; " + protocol_help)
    loc.add_argument("--device", default="auto")
    return parser


def _registry():
    from spgkit.plugins import Registry

    return Registry()


def cmd_run(args) -> int:
    from spgkit.study import SHORTHANDS, load_study, override, run_study, select_arms

    study = load_study(args.study)
    shorthands = {path: getattr(args, name) for name, path in SHORTHANDS.items() if getattr(args, name) is not None}
    if "data.args.root" in shorthands:
        shorthands["data.args.root"] = str(shorthands["data.args.root"])
    if "seeds" in shorthands:
        shorthands["seeds"] = tuple(shorthands["seeds"])
    study = override(study, {**shorthands, **dict(args.settings)})
    if args.arms:
        study = select_arms(study, args.arms)
    start = time.perf_counter()
    folder = run_study(study, args.out, registry=_registry(), progress=not args.no_progress, retrain=args.retrain, where=str(args.study))
    import torch.distributed as dist

    if dist.is_initialized():  # under torchrun: rank 0 alone reports
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    if folder.results_md.exists():
        print(folder.results_md.read_text())
        print(f"tables: {folder.results_csv}, {folder.results_md}; figures: {folder.figures}")
    print(f"wall time: {time.perf_counter() - start:.0f} s")
    return 0


def cmd_list(kind: str) -> int:
    registry = _registry()
    table = getattr(registry, kind)
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


def _trained_threshold(checkpoint: Path) -> float | None:
    from spgkit.runs import RunFolder

    run = RunFolder(checkpoint.parent)
    return run.read_metrics()["cam_threshold"] if run.metrics.exists() else None


def _open_dataset(args, registry, transform):
    """The split that ``--data``, ``--root``, ``--data-arg`` and ``--split`` name, read through ``transform``."""
    from spgkit.model import check_arguments

    reader = registry.dataset(args.data)
    reader_args = dict(args.data_arg)
    if args.root is not None:
        reader_args["root"] = str(args.root)
    check_arguments(reader, {"split": args.split, "transform": None, **reader_args}, f"dataset {args.data!r}")
    return reader(split=args.split, transform=transform, **reader_args)


def _report(args, metrics: dict) -> None:
    """Print the metrics, and write them where ``--json`` and ``--csv`` say."""
    metrics["protocol"] = args.protocol
    for key, value in metrics.items():
        print(f"{key:>28}: {value:.4f}" if isinstance(value, float) else f"{key:>28}: {value}")
    if args.json:
        from spgkit.io import write_json

        write_json(args.json, metrics)
    if args.csv:
        import csv
        import io

        from spgkit.io import write_text

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(metrics))
        writer.writeheader()
        writer.writerow(metrics)
        write_text(args.csv, buffer.getvalue())


def cmd_evaluate(args) -> int:
    from spgkit.data import eval_transform
    from spgkit.evaluate import evaluate
    from spgkit.runs import load_model
    from spgkit.train import resolve_device

    registry = _registry()
    model, config = load_model(args.checkpoint, registry)
    dataset = _open_dataset(args, registry, eval_transform(config["image_size"], config["mean"], config["std"], config["resize"]))
    classes = dataset.num_classes
    if classes != config["num_classes"]:
        raise CLIError(
            f"{args.checkpoint} was trained for {config['num_classes']} classes, but {args.data} "
            f"split {args.split!r} has {classes}"
        )
    device = resolve_device(args.device)
    cam_threshold = args.cam_threshold if args.cam_threshold is not None else (_trained_threshold(args.checkpoint) or 0.2)
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
    _report(args, metrics)
    return 0


def cmd_score(args) -> int:
    from spgkit.data import eval_transform
    from spgkit.score import score

    # The maps are made already, so no pixel is looked at and any normalisation does: what matters is
    # the size the images, boxes and masks are resized to.
    dataset = _open_dataset(args, _registry(), eval_transform(args.image_size))
    metrics = score(
        dataset,
        args.maps,
        args.logits,
        what=f"{args.data} split {args.split!r}",
        batch_size=args.batch_size,
        thresholds=args.thresholds,
        cam_threshold=args.cam_threshold,
        protocol=args.protocol,
        progress=True,
    )
    _report(args, metrics)
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


def cmd_localize(args) -> int:
    import torch
    from torchvision import tv_tensors

    from spgkit.data import image_transform
    from spgkit.data.base import load_rgb
    from spgkit.evaluate import predict_maps
    from spgkit.io import write_json
    from spgkit.localization import largest_region_box
    from spgkit.figures import localize_figure
    from spgkit.runs import load_model
    from spgkit.train import resolve_device

    model, config = load_model(args.checkpoint, _registry())
    device = resolve_device(args.device)
    model.to(device)
    threshold = args.threshold if args.threshold is not None else (_trained_threshold(args.checkpoint) or 0.2)
    size = config["image_size"]
    transform = image_transform(size, config["mean"], config["std"], config["resize"])
    results = {}
    for path, name in zip(args.images, overlay_names(args.images)):
        rgb = load_rgb(path)
        height, width = rgb.shape[:2]
        tensor = transform(tv_tensors.Image(torch.tensor(rgb).permute(2, 0, 1)))
        out, maps = predict_maps(model, tensor[None].to(device), protocol=args.protocol)
        label = int(out.logits.argmax(1))
        score = float(out.logits.softmax(1)[0, label])
        heat = maps[0].cpu().numpy() if isinstance(maps, torch.Tensor) else maps[0]
        box = largest_region_box(heat, threshold, protocol=args.protocol)
        sx, sy = width / size, height / size
        # Inclusive corners in network pixels -> [x0, y0, x1, y1) in the original image.
        box_orig = None if box is None else [box[0] * sx, box[1] * sy, (box[2] + 1) * sx, (box[3] + 1) * sy]
        overlay = args.out / name
        localize_figure(rgb, heat, box_orig, f"{config['class_names'][label]} ({score:.2f})", overlay)
        results[str(path)] = {
            "class_index": label,
            "class_name": config["class_names"][label],
            "probability": score,
            "threshold": threshold,
            "box_xyxy": box_orig,
            "overlay": str(overlay),
        }
        print(f"{path}: {config['class_names'][label]} ({score:.2f}) box {None if box_orig is None else [round(v, 1) for v in box_orig]}")
    write_json(args.out / "boxes.json", results)
    print(f"wrote {len(results)} overlay(s) and {args.out / 'boxes.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from spgkit.config import ConfigError
    from spgkit.data import DataError
    from spgkit.plugins import PluginError
    from spgkit.runs import RunConflict
    from spgkit.study import StudyError
    from spgkit.train import TrainingDiverged

    user_errors = (
        CLIError, ConfigError, StudyError, PluginError, DataError, RunConflict, TrainingDiverged,
        OSError, ValueError, TypeError, ImportError,
    )  # fmt: skip
    handlers = {"run": cmd_run, "evaluate": cmd_evaluate, "score": cmd_score, "localize": cmd_localize}
    try:
        if args.command in ("heads", "backbones", "datasets"):
            return cmd_list(args.command)
        return handlers[args.command](args)
    except user_errors as exc:
        if os.environ.get("SPGKIT_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"spgkit {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
