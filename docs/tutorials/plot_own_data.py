"""
Your own data: a folder of images and a CSV of boxes
====================================================

The simplest way to bring your own images to spgkit is a folder of image files plus a CSV file
that gives each image its class and its object boxes: :class:`spgkit.data.FolderCSV` reads it.
This tutorial makes such a folder (by rendering SynthWSOL images to PNG files, so that it runs
anywhere), reads it back, declares a study on it, runs it and shows the results.

Image-level labels are all that training uses; the boxes are only read to evaluate localization,
and to choose the CAM threshold on held-out images. As in the other tutorials the run is tiny
(48-pixel images, 160 training images, two epochs) and its numbers are noise.
"""

# %%
# The format
# ----------
#
# ``FolderCSV(root, split)`` reads ``root/<split>.csv``, a CSV with the header
# ``image,label,x0,y0,x1,y1`` (columns in any order; extra columns are ignored):
#
# - ``image``: the image's path relative to ``root``, in any folder layout and any format
#   Pillow reads;
# - ``label``: the class *name*;
# - ``x0,y0,x1,y1``: one box in pixels of the stored image, ``x0, y0`` inclusive and ``x1, y1``
#   exclusive (a box around pixel columns 3 to 5 has ``x0=3, x1=6``). An image with several
#   objects has one row per box.
#
# Every split numbers the classes alike: in the order of ``root/classes.txt`` when there is one,
# else sorted by name as they appear in ``train.csv``. Every box is checked against its image's
# size when the dataset is built, and a bad row raises an error naming the file and line (or,
# with ``on_error="skip"``, is skipped and counted).
#
# Make a folder of images
# -----------------------
#
# We render SynthWSOL images at 56 pixels (so the study's 48-pixel resize has something to do),
# one sub-folder per class, and write one CSV per split: ``train.csv`` and ``test.csv``.

import csv
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from PIL import Image

from spgkit.data import FolderCSV, SynthWSOL

torch.set_num_threads(2)  # the tutorials are sized for a 2-core CPU

workdir = tempfile.TemporaryDirectory(prefix="spgkit-own-data-")
root = Path(workdir.name) / "my_dataset"
root.mkdir()
CLASSES = SynthWSOL(num_images=1, num_classes=4).class_names  # the part shapes: disc, triangle, ...


def write_split(split: str, count: int) -> None:
    synth = SynthWSOL(split=split, num_images=count, image_size=56, num_classes=4, seed=7)
    with open(root / f"{split}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "x0", "y0", "x1", "y1"])
        for index in range(count):
            sample = synth[index]
            label = CLASSES[sample["label"]]
            name = f"images/{label}/{split}_{index:04d}.png"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(sample["image"].permute(1, 2, 0).numpy()).save(root / name)
            for box in sample["boxes"].tolist():
                writer.writerow([name, label, *(f"{v:g}" for v in box)])


write_split("train", 192)
write_split("test", 48)
print("\n".join((root / "train.csv").read_text().splitlines()[:5]))
print("...", sum(1 for _ in root.rglob("*.png")), "PNG files under", root.name + "/images/")

# %%
# Read it back
# ------------
#
# Without a ``transform``, a dataset returns :class:`~spgkit.data.Sample` dicts: the decoded image
# as a uint8 tensor, the class index, the boxes as ``tv_tensors.BoundingBoxes`` and an id. Passing
# ``class_names`` would fix another class order; here the sorted names from ``train.csv`` serve.

test = FolderCSV(root, "test")
print(len(test), "test images; classes:", test.class_names)

fig, axes = plt.subplots(1, 6, figsize=(9, 1.9))
for ax, sample in zip(axes, (test[i] for i in range(6))):
    ax.imshow(sample["image"].permute(1, 2, 0))
    for x0, y0, x1, y1 in sample["boxes"].tolist():
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.5))
    ax.set_title(test.class_names[sample["label"]], fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()

# %%
# Declare and run the study
# -------------------------
#
# A study names its dataset by its registered name (``folder_csv`` here; ``spgkit datasets`` lists
# them) and builds each split as ``reader(split=..., transform=..., **data.args)``.
# Two arms: plain CAM and SPG-B. There is no separate validation CSV, so ``select_split=None``
# holds 32 training images out of training to choose the CAM threshold on; ``test.csv`` is used
# only for the reported numbers.

from spgkit import Arm, Data, Evaluation, HeadSpec, Study, Training  # noqa: E402
from spgkit.study import run_study  # noqa: E402

study = Study(
    name="my_study",
    data=Data(
        "folder_csv",
        {"root": str(root)},
        image_size=48,
        train_split="train",
        select_split=None,
        holdout=32,
        test_split="test",
    ),
    arms=(Arm("cam"), Arm("spg_b", (HeadSpec("spg_b", {"width": 32}),))),
    backbone_args={"large_feature_map": True},  # 6 x 6 maps at 48 px (3 x 3 with the extra pool)
    classifier_width=32,
    training=Training(
        epochs=2,
        batch_size=16,
        lr=0.05,
        new_layer_lr_mult=1.0,  # trained from scratch
        schedule="cosine",
        device="cpu",
        eval_every=0,
    ),
    evaluation=Evaluation(thresholds=50),
    figure_images=4,
)

start = time.perf_counter()
results = run_study(study, Path(workdir.name) / "runs", progress=False)
print(f"trained and evaluated in {time.perf_counter() - start:.0f} s\n")
print(results.results_md.read_text())

# %%
# The overlay figure: each arm's map on the same test images, ground truth green, prediction red.

overlays = plt.imread(results.figures / "overlays.png")
fig, ax = plt.subplots(figsize=(5, 5 * overlays.shape[0] / overlays.shape[1]))
ax.imshow(overlays)
ax.axis("off")
plt.show()

# %%
# Going further
# -------------
#
# - This is a tiny, noisy CPU run; on real data use a pretrained backbone
#   (``backbone_args={"pretrained": True}``, or ``{"weights": "path/to/state_dict.pth"}``
#   offline), the full image size, more epochs and several seeds.
# - Put the study in a file (``STUDY = Study(...)``) and run it with ``spgkit run my_study.py``;
#   ``--data-root`` changes ``data.args["root"]`` from the command line (``--set FIELD=VALUE``
#   any other field), and
#   ``spgkit evaluate CHECKPOINT --data folder_csv --root my_dataset --split test`` scores a
#   trained model on any split.
# - A layout of your own (say, masks beside the images) is a small reader: a ``Dataset`` that
#   returns :class:`~spgkit.data.Sample` dicts, registered by a plugin through the
#   ``spgkit_register_datasets`` hook under a name of yours, as heads are.
# - A folder with pixel masks, or one of the published layouts (CUB, ImageNet, Tiny ImageNet,
#   Oxford-IIIT Pet, the WSOL benchmark's metadata), has a reader of its own in
#   :mod:`spgkit.data`.

workdir.cleanup()
