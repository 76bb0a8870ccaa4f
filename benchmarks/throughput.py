"""Training and inference throughput of each arm, and its peak GPU memory.

Times full optimiser steps (forward, every head's loss, backward, SGD) and no-grad inference on
random images, for the arms of the quickstart and the real-data studies (CAM, ACoL, SPG-B, SPG),
and prints the median images per second of each, with the ratio to CAM:

    python benchmarks/throughput.py --device cuda --batch-size 64 --image-size 224 --classes 200

The defaults match the peer figures in spg-reference.md (Inception-V3 with SPG's surgery, paper
widths, fp32, batch 64, 224 px, 200 classes; H100: CAM 748, ACoL 589, SPG 477 img/s, 13.4 GiB
peak). On a CPU pass a smaller ``--image-size`` and ``--batch-size``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from spgkit.model import HeadSpec, build_model
from spgkit.plugins import Registry

ARMS = {
    "cam": (),
    "acol": (HeadSpec("acol"),),
    "spg_b": (HeadSpec("spg_b"),),
    "spg": (HeadSpec("spg_b"), HeadSpec("spg_c")),
}


def step_times(model, images, labels, steps: int, train: bool, bf16: bool) -> list[float]:
    """Seconds per step, after two warm-up steps (allocator, cuDNN autotuning)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9) if train else None
    autocast = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16)
    model.train(train)
    times = []
    for index in range(steps + 2):
        start = time.perf_counter()
        if train:
            with autocast:
                out = model(images, labels)
                loss = sum(model.losses(out, labels).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            with torch.no_grad(), autocast:
                model(images)
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        if index >= 2:
            times.append(time.perf_counter() - start)
    return times


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
    print("| Arm | Train img/s | vs CAM | Inference img/s | Peak GPU memory (GiB) |")
    print("|---|---|---|---|---|")
    reference = None
    for arm in args.arms:
        torch.manual_seed(0)
        model = build_model(args.classes, ARMS[arm], args.backbone, registry=registry).to(device, memory_format=fmt)
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
