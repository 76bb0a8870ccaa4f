"""Quickstart: CAM, ACoL, SPG-B and SPG (B + C) on SynthWSOL, from scratch, on a CPU in minutes.

SynthWSOL's classes differ only in a small part attached to a large object, so a plain CAM
localizes the part while the ground truth boxes the whole object: the failure SPG and ACoL were
designed for. Inception-V3 (with SPG's stride surgery) is trained from scratch at 64 px. To fit
a 2-core CPU in under ten minutes the classifier (A3) and the heads are narrower than the paper's
(256/128 filters instead of 1024/512) and training is short: 80 SGD steps. In so few steps a
network trained from scratch does not learn the part's shape (it stays at chance, 25 %), so the
parts also carry a class colour (``colour_cue``), which it starts to pick up; the numbers show
that training works, not which method is better. The CAM threshold is chosen on the ``val``
split and everything is reported on ``test``.

    spgkit run studies/quickstart.py
"""

from spgkit import Arm, Data, HeadSpec, Study, Training

SPG_B = HeadSpec("spg_b", {"width": 128})

STUDY = Study(
    name="quickstart",
    data=Data(
        "synthwsol",
        {"num_images": 1280, "image_size": 64, "num_classes": 4, "colour_cue": True},
        image_size=64,
        max_eval=256,
    ),
    arms=(
        Arm("cam"),
        Arm("acol", (HeadSpec("acol"),)),
        Arm("spg_b", (SPG_B,)),
        Arm("spg", (SPG_B, HeadSpec("spg_c", {"width": 128}))),
    ),
    backbone="inception_v3",
    backbone_args={"large_feature_map": True},  # 8x8 maps at 64 px (4x4 with the benchmark's pool)
    classifier_width=256,
    training=Training(
        epochs=2,
        batch_size=32,
        lr=0.05,
        new_layer_lr_mult=1.0,  # nothing is pretrained
        schedule="cosine",
        weight_decay=1e-4,
        channels_last=True,
    ),
    seeds=(0,),
)
