"""Draw a grid of SynthWSOL samples with their object boxes (green) and part boxes (red), and print
how fast the generator runs.

Usage::

    python docs/scripts/synthwsol_grid.py [--output docs/_static/synthwsol_grid.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.patches import Rectangle  # noqa: E402

from spgkit.data import SynthWSOL  # noqa: E402

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "_static" / "synthwsol_grid.png"


def images_per_second(image_size: int, count: int) -> float:
    """Generation throughput of one process (no transform) at ``image_size``, per second of CPU
    time, which a busy shared machine disturbs less than wall-clock time."""
    dataset = SynthWSOL(num_images=count, image_size=image_size)
    start = time.process_time()
    for index in range(count):
        dataset[index]
    return count / (time.process_time() - start)


def draw_box(axis: plt.Axes, box, colour: str) -> None:
    """Outline an exclusive-convention XYXY box on an ``imshow`` axis (pixel centres at integers)."""
    x0, y0, x1, y1 = box.tolist()
    axis.add_patch(
        Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--columns", type=int, default=6, help="samples per class (one row per class)")
    parser.add_argument("--num-classes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dataset = SynthWSOL(
        split="val",
        num_images=args.columns * args.num_classes,
        image_size=args.image_size,
        num_classes=args.num_classes,
        seed=args.seed,
    )
    figure, axes = plt.subplots(
        args.num_classes, args.columns, figsize=(1.6 * args.columns, 1.7 * args.num_classes), squeeze=False
    )
    for index in range(len(dataset)):
        sample = dataset[index]
        axis = axes[sample["label"], index // args.num_classes]
        axis.imshow(sample["image"].permute(1, 2, 0).numpy(), interpolation="nearest")
        draw_box(axis, sample["boxes"][0], "lime")
        draw_box(axis, sample["part_box"][0], "red")
        axis.set_xticks([])
        axis.set_yticks([])
    for label, name in enumerate(dataset.class_names):
        axes[label, 0].set_ylabel(f"class {label}: {name}", fontsize=8)
    figure.suptitle("SynthWSOL: object box (green), class-deciding part (red)", fontsize=10)
    figure.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    for size, count in ((64, 2000), (224, 300)):
        rate = images_per_second(size, count)
        print(f"SynthWSOL generation at {size} px: {rate:.0f} images per CPU-second (one process)")


if __name__ == "__main__":
    main()
