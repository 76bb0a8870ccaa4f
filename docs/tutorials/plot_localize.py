"""
Train, load and localize
========================

This tutorial trains a tiny model with both SPG heads (SPG-B and SPG-C) on SynthWSOL, the
synthetic benchmark that ships with spgkit, loads the checkpoint back, and looks at everything the
model produces for a few test images:

- the **class activation map** (CAM) of the classifier, which is what localizes at test time,
- the **seed masks** that SPG builds from its own maps during training (object, background,
  ignored),
- the **boxes**: the ground truth against the box of the largest region of the thresholded map.

It is sized to run in well under a minute on a laptop CPU: 48-pixel images, a few hundred training
images, two epochs, and layers 32 filters wide where the paper uses 512 to 1024. The model
it trains is correspondingly weak; the point is the workflow, not the numbers.
"""

# %%
# Declare what to train
# ---------------------
#
# A :class:`~spgkit.study.Study` holds everything that is shared by the methods it compares (the
# data, the backbone, the training protocol) and an :class:`~spgkit.study.Arm` names the guidance
# heads of one method. Heads are looked up by their registry name; ``spg_b`` and ``spg_c`` come
# from the ``spgkit-spg`` plugin distribution, which the README's set-up installs.
#
# Here the study has a single arm, and we train it with :func:`spgkit.train.train_arm`, the
# function that :func:`spgkit.study.run_study` calls for every arm and seed.

import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from spgkit import Arm, Data, Evaluation, HeadSpec, Study, Training
from spgkit.data import SynthWSOL, collate, eval_transform
from spgkit.evaluate import predict_maps
from spgkit.localization import box_iou, largest_region_box, resize_gt_boxes, threshold_boxes
from spgkit.runs import RunFolder, load_model
from spgkit.train import train_arm

torch.set_num_threads(2)  # the tutorials are sized for a 2-core CPU

SYNTH = {"num_images": 320, "image_size": 48, "num_classes": 4}

study = Study(
    name="localize_tutorial",
    data=Data("synthwsol", SYNTH, image_size=48, max_eval=64),
    arms=(Arm("spg", (HeadSpec("spg_b", {"width": 32}), HeadSpec("spg_c", {"width": 32}))),),
    backbone="inception_v3",  # with SPG's stride surgery: 48 px in, 6 x 6 maps out
    backbone_args={"large_feature_map": True},  # the benchmark's extra pool would leave 3 x 3
    classifier_width=32,  # A3 filters (1024 in the paper)
    training=Training(
        epochs=2,
        batch_size=16,
        lr=0.05,
        new_layer_lr_mult=1.0,  # nothing is pretrained, so every layer learns at the same rate
        schedule="cosine",
        device="cpu",
        eval_every=0,  # no validation between epochs, only the final evaluation
    ),
    evaluation=Evaluation(thresholds=50),  # the WSOL benchmark's protocol, 50 thresholds
)

# %%
# Train
# -----
#
# ``train_arm`` writes into a :class:`~spgkit.runs.RunFolder`: ``config.json`` (what the run
# computes, so a later run of another configuration is refused instead of reported), then
# ``checkpoint.pt`` after every epoch (so an interrupted run resumes), ``log.csv``, and, once
# finished, ``metrics.json``. It picks the CAM threshold on the ``val`` split and reports every
# metric on the ``test`` split.

workdir = tempfile.TemporaryDirectory(prefix="spgkit-localize-")
run = RunFolder(Path(workdir.name) / "spg" / "seed0")

start = time.perf_counter()
metrics = train_arm(study, study.arms[0], seed=0, run=run, progress=False)
print(f"trained in {time.perf_counter() - start:.0f} s; files: {sorted(p.name for p in run.path.iterdir() if p.name != '.lock')}")
for key in ("top1_acc", "gt_known_loc", "maxboxacc", "maxboxaccv2", "pxap", "cam_threshold"):
    print(f"{key:>14}: {metrics[key]:6.2f}")

# %%
# Load the checkpoint
# -------------------
#
# :func:`spgkit.runs.load_model` rebuilds the model from the configuration stored in the
# checkpoint (backbone, heads and their arguments, number of classes) and loads the weights. The
# model comes back in ``eval()`` mode: dropout off, and no head transforms its input.

model, config = load_model(run.checkpoint)
print("heads:", list(model.heads), "| classes:", config["class_names"], "| input:", config["image_size"], "px")

# %%
# Run it on test images
# ---------------------
#
# The evaluation transform resizes to the training size and normalises with the statistics the
# backbone expects (stored in the checkpoint's config). :func:`spgkit.evaluate.predict_maps`
# returns the logits and the localization maps at image resolution, in [0, 1], made as the
# evaluation protocol says (the WSOL benchmark's by default: bicubic resize, then min-max).
# Without ``classes`` it maps the predicted class; here we ask for the ground-truth class, as the
# GT-known metrics do.

transform = eval_transform(config["image_size"], config["mean"], config["std"])
test = SynthWSOL(split="test", transform=transform, **SYNTH)
batch = collate([test[i] for i in range(6)])
images, labels = batch["images"], batch["labels"]

out, maps = predict_maps(model, images, labels)
predicted = out.logits.argmax(1)
names = config["class_names"]
print("true:     ", [names[i] for i in labels])
print("predicted:", [names[i] for i in predicted])

# %%
# The heads' guidance
# -------------------
#
# Given labels, SPG-B and SPG-C build their seed masks even in ``eval()`` mode (that is how the
# study's ``heads_<arm>.png`` figure is drawn). Each head offers them to figures in the
# ``visuals`` of its :class:`~spgkit.heads.HeadOutput`, beside its maps, as uint8 masks with
# 1 = object, 0 = background and 255 = ignored:
#
# - ``seed b2``: from the classifier's CAM of the true class, supervises branch B2;
# - ``seed b1``: from sigmoid(B2), supervises branch B1;
# - ``seed c``: from the average of sigmoid(B1) and sigmoid(B2), supervises SPG-C.

with torch.no_grad():
    guided = model(images, labels)
seeds = {key: value for head in guided.heads.values() for key, value in head.visuals.items() if key.startswith("seed")}
for key, seed in seeds.items():
    shares = [100 * (seed == value).float().mean().item() for value in (1, 0, 255)]
    print(f"{key}: {tuple(seed.shape)} {seed.dtype}, object {shares[0]:.0f}%, background {shares[1]:.0f}%, ignored {shares[2]:.0f}%")

# %%
# A model this undertrained often gives degenerate seeds: where sigmoid(B2) is still above 0.5
# almost everywhere, B1's seed marks the whole image as object, and so does SPG-C's. The shares
# printed above say how this run came out.

# %%
# Boxes
# -----
#
# A box comes from thresholding the map at the CAM threshold chosen on the ``val`` split and
# taking the largest connected region: :func:`spgkit.localization.largest_region_box` returns its
# box in spgkit's one box convention (:mod:`spgkit.boxes`: a float (n, 4) array
# ``x0, y0, x1, y1``, right and bottom edges excluded; (0, 4) for no box), as the dataset's boxes
# are. The evaluator scores boxes as the WSOL benchmark does, with inclusive corners:
# :func:`spgkit.localization.threshold_boxes` gives the map's regions in them (in the benchmark's
# protocol always a box: ``(0, 0, 0, 0)`` when no pixel passes), and
# :func:`spgkit.localization.resize_gt_boxes` turns the dataset's boxes into them on the resized
# image, as :func:`spgkit.localization.box_iou` wants them.

threshold = metrics["cam_threshold"]
boxes, ious = [], []
for i in range(len(labels)):
    boxes.append(largest_region_box(maps[i], threshold))
    scored = threshold_boxes(maps[i], [threshold])  # the evaluator's inclusive corners
    gt = resize_gt_boxes(batch["original_boxes"][i], batch["original_size"][i], tuple(images.shape[-2:]))
    ious.append(float(box_iou(scored.largest[:1], gt).max()) if scored.has_largest[0] else 0.0)
print("IoU with the ground truth:", [f"{v:.2f}" for v in ious])

# %%
# Draw everything
# ---------------
#
# One row per test image. Green: the ground-truth box; red: the predicted box. In the seed
# columns, white is object, black is background and grey is ignored.

mean, std = np.array(config["mean"]), np.array(config["std"])


def show_image(ax, image):
    ax.imshow((image.permute(1, 2, 0).numpy() * std + mean).clip(0, 1))


def outline(ax, boxes, colour):
    # Pixel centres sit at integer coordinates in imshow: a box over pixel columns x0 .. x1 - 1
    # spans from x0 - 0.5 to x1 - 0.5.
    for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4).tolist():
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=2))


columns = ["image", "localization map", *seeds, "boxes"]
fig, axes = plt.subplots(len(labels), len(columns), figsize=(1.9 * len(columns), 1.9 * len(labels)), squeeze=False)
for row in range(len(labels)):
    ax = axes[row]
    show_image(ax[0], images[row])
    ax[1].imshow(maps[row], cmap="jet", vmin=0, vmax=1)
    for col, key in enumerate(seeds, start=2):
        seed = seeds[key][row].float()
        ax[col].imshow(torch.where(seed == 255, 0.5, seed), cmap="gray", vmin=0, vmax=1)
    show_image(ax[-1], images[row])
    ax[-1].imshow(maps[row], cmap="jet", alpha=0.4, vmin=0, vmax=1)
    outline(ax[-1], batch["boxes"][row], "lime")
    outline(ax[-1], boxes[row], "red")
    ax[0].set_ylabel(f"{names[labels[row]]} -> {names[predicted[row]]}", fontsize=8)
    for a in ax:
        a.set_xticks([])
        a.set_yticks([])
for a, title in zip(axes[0], columns):
    a.set_title(title, fontsize=9)
fig.tight_layout()
plt.show()

# %%
# What to read into it
# --------------------
#
# Very little: this is a tiny, noisy CPU run (two epochs on a few hundred 48-pixel images, layers a
# few dozen filters wide), and its classification accuracy and box IoUs are close to what an
# untrained model would get. On SynthWSOL a well-trained plain CAM lights up the small *part* that
# tells the classes apart, while the ground-truth box covers the whole object; SPG's seed masks
# are meant to push the attention out over the body. To see that happen, run the quickstart study
# (``spgkit run studies/quickstart.py``, a few minutes) or the GPU-sized ``studies/ablation.py``.
#
# The same steps work on any checkpoint written by ``spgkit run``; the command
# ``spgkit localize runs/<study>/<arm>/seed0/checkpoint.pt image.jpg --out overlays/`` does the
# map-and-box part for image files.

workdir.cleanup()
