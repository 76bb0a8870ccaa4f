"""Quickstart: CAM, ACoL, SPG-B and SPG (B + C) on SynthWSOL, on a CPU in a few minutes.

SynthWSOL's classes differ only in a small part attached to a large body, like a bird's head, so a
classifier needs only the part and its class activation map lights up the part, while the ground
truth covers the whole object: the failure SPG and ACoL were invented for. The table scores every
map against the object and against the part (``Part MaxBoxAccV2``, ``On part``, ``Object
covered``), and a short reading generated from the numbers follows it.

To fit a 2-core CPU in under five minutes, what was traded:

- EfficientNet-Lite0 with its ImageNet weights (installed offline by ``spgkit[lite0]``), cut after
  its stride-8 stage (``roles``): 40 channels at 12 x 12 for a 96-pixel image, where part and object
  can be told apart (at 64 pixels, 8 x 8 maps cannot). The full network at output stride 8 costs
  four to six times as much per step, for its dilated last stages.
- Narrow new layers: 256 filters in the classifier (1024 in SPG), 128 in SPG's branches (512).
- 300 SGD steps of 16 images, one pass over 4,800 images; 256 images to choose the CAM threshold
  on and 256 to test on. One seed: it shows the effect, it proves nothing.

The methods compute what the WSOL benchmark's code computes, Xavier-initialised layers included.
In so short a run the SPG arms are unstable (see ``docs/results.rst``); a run that diverges is
reported as such and the others go on.

    spgkit run studies/quickstart.py
"""

from spgkit import Arm, Data, Evaluation, HeadSpec, Study, Training

SPG_B = HeadSpec("spg_b", {"width": 128})

STUDY = Study(
    name="quickstart",
    data=Data("synthwsol", {"num_images": 4800, "image_size": 96, "num_classes": 4}, image_size=96, max_eval=256),
    arms=(
        Arm("cam"),
        Arm("acol", (HeadSpec("acol"),)),
        Arm("spg_b", (SPG_B,)),
        Arm("spg", (SPG_B, HeadSpec("spg_c", {"width": 128}))),
    ),
    backbone="tf_efficientnet_lite0",
    backbone_args={"pretrained": True, "roles": {"low": 1, "mid": 1, "late": 2, "high": 2}, "output_stride": None},
    classifier_width=256,
    training=Training(
        epochs=1,
        batch_size=16,
        lr=0.003,
        new_layer_lr_mult=10.0,
        schedule="cosine",
        weight_decay=1e-4,
        eval_every=0,  # the selection split is scored once, after training
    ),
    evaluation=Evaluation(thresholds=100),
    seeds=(0,),
)
