"""Training and inference throughput of each arm, and its peak GPU memory; or, with
``--reference``, spgkit's training step side by side with the WSOL benchmark's own.

Times full optimiser steps (forward, every head's loss, backward, SGD) and no-grad inference on
random images, for the arms of the quickstart and the real-data studies (CAM, ACoL, SPG-B, SPG),
and prints the median images per second of each, with the ratio to CAM:

    python benchmarks/throughput.py --device cuda --batch-size 64 --image-size 224 --classes 200

The defaults match the peer figures in spg-reference.md (Inception-V3 with SPG's surgery, paper
widths, fp32, batch 64, 224 px, 200 classes; H100: CAM 748, ACoL 589, SPG 477 img/s, 13.4 GiB
peak). On a CPU pass a smaller ``--image-size`` and ``--batch-size``.

``--reference PATH`` names a local checkout of github:clovaai/wsolevaluation (never shipped with
spgkit). For each of CAM, ACoL and SPG it builds the benchmark's model, gives spgkit's the same
weights, and times the benchmark's step (its model, its loss, SGD) against spgkit's
(:func:`spgkit.train.train_step`) in each ``--variants`` (fp32, channels_last, bf16, compile, and bf16 with either) on
the same batch, the steps interleaved so that load on the machine hits all alike. The first
step's loss of each shows that they compute the same (same dropout draws, except compiled code,
which draws its own)::

    python benchmarks/throughput.py --reference ../wsolevaluation --device cpu --batch-size 8 \
        --large-feature-map --arms cam acol spg --variants fp32 channels_last bf16 compile
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import wsol_reference as ref  # noqa: E402

from spgkit.model import HeadSpec, build_model  # noqa: E402
from spgkit.plugins import Registry  # noqa: E402
from spgkit.train import train_step  # noqa: E402

ARMS = {
    "cam": (),
    "acol": (HeadSpec("acol"),),
    "spg_b": (HeadSpec("spg_b"),),
    "spg": (HeadSpec("spg_b"), HeadSpec("spg_c")),
}


#: spgkit's step in each variant: (channels-last, bf16 autocast, torch.compile).
VARIANTS = {
    "fp32": (False, False, False), "channels_last": (True, False, False), "bf16": (False, True, False), "compile": (False, False, True),
    "bf16_channels_last": (True, True, False), "bf16_compile": (False, True, True),
}  # fmt: skip


def step_times(model, images, labels, steps: int, train: bool, bf16: bool) -> list[float]:
    """Seconds per step, after two warm-up steps (allocator, cuDNN autotuning)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9) if train else None
    autocast = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16)
    model.train(train)
    times = []
    for index in range(steps + 2):
        start = time.perf_counter()
        if train:
            train_step(model, model, optimizer, images, labels, autocast)
        else:
            with torch.no_grad(), autocast:
                model(images)
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        if index >= 2:
            times.append(time.perf_counter() - start)
    return times


def side_by_side(args, images: torch.Tensor, labels: torch.Tensor) -> None:
    """The benchmark's training step against spgkit's variants, interleaved, per arm."""
    checkout = Path(args.reference)
    print("| Arm | Step | Train img/s | vs benchmark | First-step loss |")
    print("|---|---|---|---|---|")
    for arm in args.arms:
        if arm not in ref.LAYERS:
            raise SystemExit(f"--reference: the benchmark has no {arm!r} model; use cam, acol or spg")
        torch.manual_seed(0)
        theirs = ref.reference_model(checkout, arm, args.classes, args.large_feature_map).to(images.device)
        ours = build_model(args.classes, ARMS[arm], "inception_v3", backbone_args={"large_feature_map": args.large_feature_map})
        ref.copy_weights(theirs, arm, ours)
        steps = {"benchmark": _reference_step(checkout, arm, theirs)}
        for name in args.variants:
            steps[f"spgkit {name}"] = _spgkit_step(copy.deepcopy(ours).to(images.device), *VARIANTS[name])
        times = {name: [] for name in steps}
        losses = {}
        for index in range(args.steps + 2):  # two warm-up steps (compilation, allocator)
            for name, step in steps.items():
                torch.manual_seed(index)  # the same dropout draws for every model
                start = time.perf_counter()
                loss = step(images, labels)
                if images.device.type == "cuda":
                    torch.cuda.synchronize()
                if index >= 2:
                    times[name].append(time.perf_counter() - start)
                losses.setdefault(name, float(loss))
        base = statistics.median(times["benchmark"])
        for name, seconds in times.items():
            rate = args.batch_size / statistics.median(seconds)
            print(f"| {arm} | {name} | {rate:.2f} | {base / statistics.median(seconds):.2f}x | {losses[name]:.6f} |")


def _optimizer(model) -> torch.optim.Optimizer:
    # The benchmark's optimiser (nesterov SGD), at a rate small enough to keep 20 steps stable.
    return torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True, weight_decay=1e-4)


def _reference_step(checkout: Path, arm: str, model):
    optimizer = _optimizer(model)
    model.train()

    def step(images, labels):
        loss = ref.reference_loss(checkout, arm, model(images, labels), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _spgkit_step(model, channels_last: bool, bf16: bool, compiled: bool):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt).train()
    net = torch.compile(model) if compiled else model
    optimizer = _optimizer(model)

    def step(images, labels):
        autocast = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16)
        return train_step(net, model, optimizer, images.contiguous(memory_format=fmt), labels, autocast)["loss"]

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="inception_v3")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per arm and mode")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--large-feature-map", action="store_true", help="Inception-V3 28x28 maps at 224 px (default 14x14)")
    parser.add_argument("--reference", metavar="PATH", help="a checkout of clovaai/wsolevaluation: time its step beside spgkit's")
    parser.add_argument("--variants", nargs="+", default=["fp32"], choices=list(VARIANTS), help="spgkit's steps beside --reference")
    args = parser.parse_args()

    device = torch.device(args.device)
    registry = Registry()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator)
    images = images.to(device).contiguous(memory_format=fmt)
    labels = torch.randint(0, args.classes, (args.batch_size,), generator=generator).to(device)
    print(
        f"{args.backbone}, batch {args.batch_size}, {args.image_size} px, {args.classes} classes, "
        f"{'bf16' if args.bf16 else 'fp32'}, {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else torch.get_num_threads()} "
        f"{'' if device.type == 'cuda' else 'threads'}), median of {args.steps} steps"
    )
    if args.reference:
        side_by_side(args, images, labels)
        return
    print("| Arm | Train img/s | vs CAM | Inference img/s | Peak GPU memory (GiB) |")
    print("|---|---|---|---|---|")
    backbone_args = {"large_feature_map": True} if args.large_feature_map else {}
    reference = None
    for arm in args.arms:
        torch.manual_seed(0)
        model = build_model(args.classes, ARMS[arm], args.backbone, registry=registry, backbone_args=backbone_args).to(device, memory_format=fmt)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        train = args.batch_size / statistics.median(step_times(model, images, labels, args.steps, True, args.bf16))
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}" if device.type == "cuda" else "-"
        infer = args.batch_size / statistics.median(step_times(model, images, labels, args.steps, False, args.bf16))
        reference = reference or (train if arm == "cam" else None)
        ratio = f"{train / reference:.2f}" if reference else "-"
        print(f"| {arm} | {train:.1f} | {ratio} | {infer:.1f} | {peak} |")
        del model


if __name__ == "__main__":
    main()
