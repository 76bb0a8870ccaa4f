"""The SPG paper's ablation beside CAM and ACoL, several seeds; sized for a GPU.

Arms: SPG-plain (the CAM classifier alone, on SPG's Inception-V3: this *is* the CAM baseline on
this backbone, so it is reported once, as ``cam``), + SPG-B unshared, + SPG-B shared, + SPG-B + SPG-C
(full SPG), and ACoL. SynthWSOL at 224 px, Inception-V3 from scratch, the paper's layer widths.

    spgkit run studies/ablation.py --device cuda --bf16
"""

from spgkit import Arm, Data, HeadSpec, Study, Training

STUDY = Study(
    name="ablation",
    data=Data("synthwsol", {"num_images": 20000, "image_size": 224, "num_classes": 8}, image_size=224, max_eval=2000),
    arms=(
        Arm("cam"),
        Arm("spg_b_unshared", (HeadSpec("spg_b", {"shared": False}),)),
        Arm("spg_b_shared", (HeadSpec("spg_b", {"shared": True}),)),
        Arm("spg", (HeadSpec("spg_b"), HeadSpec("spg_c"))),
        Arm("acol", (HeadSpec("acol"),)),
    ),
    backbone="inception_v3",
    classifier_width=1024,
    training=Training(
        epochs=20,
        batch_size=64,
        lr=0.02,
        new_layer_lr_mult=1.0,  # from scratch
        schedule="cosine",
        channels_last=True,
        num_workers=8,
    ),
    seeds=(0, 1, 2),
)
