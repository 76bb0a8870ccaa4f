"""The ``spgkit`` command: run studies, list plugins, evaluate checkpoints, localize images."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EPILOG = "Set SPGKIT_DEBUG=1 to see a traceback instead of a one-line error."


PROTOCOL_CHOICES = ("benchmark", "float")
PROTOCOL_HELP = (
    "evaluation protocol: 'benchmark' = the WSOL benchmark's definitions end to end (map resized with "
    "cv2 INTER_CUBIC, min-max normalised, uint8 thresholds int(tau*max), OpenCV contours, +1 IoU, GT "
    "boxes resized by truncation, its PxAP), comparable with its published tables; 'float' = thresholds "
    "on the bilinearly resized float map, tight boxes of 8-connected regions"
)


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _key_value(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)  # numbers, booleans, lists
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spgkit",
        description="Weakly-supervised object localization studies: SPG, ACoL and CAM as pluggable heads.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train every arm and seed of a study, then write its table and figures", epilog=EPILOG)
    run.add_argument("study", type=Path, help="a study file defining STUDY = Study(...), e.g. studies/quickstart.py")
    run.add_argument("--out", type=Path, default=Path("runs"), help="output root (default: runs/); results go to OUT/<study name>/")
    run.add_argument("--epochs", type=int, help="override the study's epochs")
    run.add_argument("--batch-size", type=int, help="override the global batch size")
    run.add_argument("--lr", type=float, help="override the base learning rate")
    run.add_argument("--image-size", type=int, help="override the training/evaluation image size")
    run.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    run.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast on CUDA")
    run.add_argument("--num-workers", type=int, help="data-loading processes")
    run.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the study's)")
    run.add_argument("--arms", nargs="+", help="run only these arms")
    run.add_argument("--data-root", type=Path, help="dataset root (sets the study's data.args['root'])")
    run.add_argument("--max-train", type=int, help="use at most this many training images")
    run.add_argument("--max-eval", type=int, help="use at most this many selection/test images")
    run.add_argument("--protocol", choices=PROTOCOL_CHOICES, help=PROTOCOL_HELP + " (default: the study's, normally benchmark)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    sub.add_parser("heads", help="list registered guidance heads and the distribution providing each")
    sub.add_parser("backbones", help="list registered backbones and the distribution providing each")

    ev = sub.add_parser("evaluate", help="classification and localization metrics of a checkpoint", epilog=EPILOG)
    ev.add_argument("checkpoint", type=Path, help="a checkpoint.pt written by `spgkit run`")
    ev.add_argument("--data", required=True, help="dataset name (synthwsol, cub, imagenet, tiny_imagenet, pets, folder_csv, wsol_metadata)")
    ev.add_argument("--root", type=Path, help="dataset root, for datasets read from files")
    ev.add_argument("--data-arg", type=_key_value, action="append", default=[], metavar="KEY=VALUE", help="further reader arguments (repeatable)")
    ev.add_argument("--split", default="test", help="split to evaluate (default: test)")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--thresholds", type=int, default=100, help="number of CAM thresholds in [0, 1)")
    ev.add_argument("--cam-threshold", type=float, help="threshold for GT-known/Top-1 Loc (default: the one chosen in training)")
    ev.add_argument("--protocol", choices=PROTOCOL_CHOICES, default="benchmark", help=PROTOCOL_HELP + " (default: benchmark)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--json", type=Path, help="also write the metrics to this JSON file")

    loc = sub.add_parser("localize", help="draw maps and boxes for images with a checkpoint", epilog=EPILOG)
    loc.add_argument("checkpoint", type=Path, help="a checkpoint.pt written by `spgkit run`")
    loc.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files")
    loc.add_argument("--out", type=Path, required=True, help="folder for <image>_overlay.png and boxes.json")
    loc.add_argument("--threshold", type=float, help="CAM threshold for the box (default: the one chosen in training)")
    loc.add_argument("--protocol", choices=PROTOCOL_CHOICES, default="benchmark", help="how the map is resized and the box found: " + PROTOCOL_HELP)
    loc.add_argument("--device", default="auto")
    return parser


def _registry():
    from spgkit.plugins import Registry

    return Registry()


def cmd_run(args) -> int:
    from spgkit.study import load_study, override, run_study

    study = override(
        load_study(args.study),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        image_size=args.image_size,
        device=args.device,
        bf16=args.bf16,
        num_workers=args.num_workers,
        seeds=args.seeds,
        arms=args.arms,
        data_root=args.data_root,
        max_train=args.max_train,
        max_eval=args.max_eval,
        protocol=args.protocol,
    )
    start = time.perf_counter()
    root = run_study(study, args.out, registry=_registry(), progress=not args.no_progress)
    import torch.distributed as dist

    if dist.is_initialized():  # under torchrun: rank 0 alone reports
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    if (root / "results.md").exists():
        print((root / "results.md").read_text())
        print(f"tables: {root / 'results.csv'}, {root / 'results.md'}; figures: {root / 'figures'}")
    print(f"wall time: {time.perf_counter() - start:.0f} s")
    return 0


def cmd_list(kind: str) -> int:
    registry = _registry()
    table = registry.heads if kind == "heads" else registry.backbones
    if not table:
        print(f"no {kind} registered")
        return 0
    width = max(len(name) for name in table)
    for name, entry in sorted(table.items()):
        doc = (entry.obj.__doc__ or "").strip().splitlines()
        print(f"{name:<{width}}  from {entry.plugin}" + (f"  -- {doc[0]}" if doc else ""))
    return 0


def _trained_threshold(checkpoint: Path) -> float | None:
    from spgkit.io import read_json

    metrics = checkpoint.parent / "metrics.json"
    return read_json(metrics)["cam_threshold"] if metrics.exists() else None


def cmd_evaluate(args) -> int:
    from spgkit.data import DATASETS, eval_transform
    from spgkit.train import evaluate, load_model, resolve_device

    model, config = load_model(args.checkpoint, _registry())
    if args.data not in DATASETS:
        raise CLIError(f"unknown dataset {args.data!r}; known: {', '.join(sorted(DATASETS))}")
    reader_args = dict(args.data_arg)
    if args.root is not None:
        reader_args["root"] = str(args.root)
    transform = eval_transform(config["image_size"], config["mean"], config["std"])
    dataset = DATASETS[args.data](split=args.split, transform=transform, **reader_args)
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
    metrics["protocol"] = args.protocol
    for key, value in metrics.items():
        print(f"{key:>28}: {value:.4f}" if isinstance(value, float) else f"{key:>28}: {value}")
    if args.json:
        from spgkit.io import write_json

        write_json(args.json, metrics)
    return 0


def cmd_localize(args) -> int:
    import torch
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as TF

    from spgkit.io import write_json
    from spgkit.localization import largest_region_box
    from spgkit.report import localize_figure
    from spgkit.train import load_model, predict_maps, resolve_device

    model, config = load_model(args.checkpoint, _registry())
    device = resolve_device(args.device)
    model.to(device)
    threshold = args.threshold if args.threshold is not None else (_trained_threshold(args.checkpoint) or 0.2)
    size = config["image_size"]
    results = {}
    for path in args.images:
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise CLIError(f"{path}: not a readable image ({exc})") from None
        tensor = TF.to_dtype(TF.resize(TF.pil_to_tensor(image), [size, size]), torch.float32, scale=True)
        tensor = TF.normalize(tensor, config["mean"], config["std"])
        out, maps = predict_maps(model, tensor[None].to(device), protocol=args.protocol)
        label = int(out.logits.argmax(1))
        score = float(out.logits.softmax(1)[0, label])
        heat = maps[0].cpu().numpy() if isinstance(maps, torch.Tensor) else maps[0]
        box = largest_region_box(heat, threshold, protocol=args.protocol)
        sx, sy = image.width / size, image.height / size
        # Inclusive corners in network pixels -> [x0, y0, x1, y1) in the original image.
        box_orig = None if box is None else [box[0] * sx, box[1] * sy, (box[2] + 1) * sx, (box[3] + 1) * sy]
        overlay = args.out / f"{path.stem}_overlay.png"
        localize_figure(image, heat, box_orig, f"{config['class_names'][label]} ({score:.2f})", overlay)
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
    from spgkit.data import DataError
    from spgkit.plugins import PluginError
    from spgkit.study import StudyError
    from spgkit.train import TrainingDiverged

    handlers = {"run": cmd_run, "evaluate": cmd_evaluate, "localize": cmd_localize}
    try:
        if args.command in ("heads", "backbones"):
            return cmd_list(args.command)
        return handlers[args.command](args)
    except (CLIError, StudyError, PluginError, DataError, TrainingDiverged, FileNotFoundError, ValueError, TypeError, ImportError) as exc:
        if os.environ.get("SPGKIT_DEBUG"):
            raise
        print(f"spgkit {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
