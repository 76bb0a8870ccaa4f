"""CAM, ACoL, SPG-B (shared and unshared) and SPG on SynthWSOL, three seeds, CPU-sized.

The quickstart's settings (EfficientNet-Lite0 with its ImageNet weights cut after its stride-8
stage, 96 pixels, 300 steps of 16 images) with every arm of the SPG ablation beside CAM and ACoL,
and three seeds, so that the paired differences say something. SynthWSOL's body carries no class
evidence by default: only the part tells the classes apart, and an erasing method has nothing to
find once the part is erased. ``body_cue`` gives the body weaker evidence of its own, as a bird's
wings and body have; run the study at both strengths::

    spgkit run studies/synth.py
    spgkit run studies/synth.py --set data.args.body_cue=0.5 --set name=synth_body

About 13 minutes each on an idle 2-core CPU (795 s at body cue 0.5; 1,391 s at 0 beside other
work). A GPU-sized version: the full Lite0 at output stride 8 and 224 pixels, more steps::

    spgkit run studies/synth.py --device cuda --image-size 224 --set data.args.image_size=224 \\
        --set data.args.num_images=20000 --set 'backbone_args.roles={"low": 1, "mid": 2, "late": 3, "high": 4}' \\
        --set backbone_args.output_stride=8 --set classifier_width=1024 --epochs 10 --batch-size 64
"""

from spgkit import Arm, Data, Evaluation, HeadSpec, Study, Training

WIDTH = {"width": 128}

STUDY = Study(
    name="synth",
    data=Data("synthwsol", {"num_images": 4800, "image_size": 96, "num_classes": 4, "body_cue": 0.0}, image_size=96, max_eval=256),
    arms=(
        Arm("cam"),
        Arm("acol", (HeadSpec("acol"),)),
        Arm("spg_b_unshared", (HeadSpec("spg_b", {**WIDTH, "shared": False}),)),
        Arm("spg_b_shared", (HeadSpec("spg_b", WIDTH),)),
        Arm("spg", (HeadSpec("spg_b", WIDTH), HeadSpec("spg_c", WIDTH))),
    ),
    backbone="tf_efficientnet_lite0",
    backbone_args={"pretrained": True, "roles": {"low": 1, "mid": 1, "late": 2, "high": 2}, "output_stride": None},
    classifier_width=256,
    training=Training(epochs=1, batch_size=16, lr=0.003, new_layer_lr_mult=10.0, schedule="cosine", eval_every=0),
    evaluation=Evaluation(thresholds=100),
    seeds=(0, 1, 2),
)
