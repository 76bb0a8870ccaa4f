"""TS-CAM against the same vision transformer's CAM on SynthWSOL, three seeds, CPU-sized.

No ViT ImageNet weights install offline, so a small ViT (timm's ``vit_tiny_patch16_224`` cut to
four blocks of width 96, 12-pixel patches: an 8 x 8 grid at 96 pixels) is trained from scratch,
with TS-CAM's classifier (one 3x3 convolution on the final-normed patch tokens). Both arms train
the same network in the same way (TS-CAM adds no loss and acts only at evaluation), so with the
same seed their weights are the same and the paired differences are those of the maps alone:

``vit_cam``  the semantic-aware map alone (``tscam`` with ``couple=False``): the ViT's CAM
``tscam``    that map times the class token's attention, summed over the blocks (TS-CAM)

SynthWSOL annotates the discriminative part and the whole object, so the part/object diagnostics
say whether the coupled map covers more of the object than the CAM::

    spgkit run studies/tscam.py                    # one run at a time
    spgkit run studies/tscam.py --executor ray     # with the ray extra: one run per core

The part carries its class's hue besides its shape (``colour_cue``): without it the scratch ViT
stays at chance on the CPU (450 steps with SGD, 600 with AdamW; docs/results.rst); with it, it
learns within a few hundred. AdamW as the reference trains (learning rate 1e-3 for a network from
scratch, weight decay 0.05), 1,800 steps: about 350 s per run on one CPU thread, 6 runs, 1,102 s
on the 2-core CPU with Ray.

The CNN arms on the same data, for reading beside it (another backbone, Lite0 with ImageNet
weights, so not paired with these arms)::

    spgkit run studies/synth.py --set data.args.colour_cue=true --set name=synth_colour --arms cam acol spg
"""

from spgkit import Arm, Data, Evaluation, HeadSpec, Study, Training

VIT = {"img_size": 96, "patch_size": 12, "embed_dim": 96, "depth": 4, "num_heads": 3}

STUDY = Study(
    name="tscam",
    data=Data("synthwsol", {"num_images": 4800, "image_size": 96, "num_classes": 4, "colour_cue": True}, image_size=96, max_eval=256),
    arms=(
        Arm("vit_cam", (HeadSpec("tscam", {"couple": False}),)),
        Arm("tscam", (HeadSpec("tscam"),)),
    ),
    backbone="timm:vit_tiny_patch16_224",
    backbone_args={"final_norm": True, "model_args": VIT},
    training=Training(
        epochs=12, batch_size=32, optimizer="adamw", lr=1e-3, new_layer_lr_mult=1.0, weight_decay=0.05,
        grad_clip=1.0, schedule="onecycle", warmup=0.1, eval_every=0,
    ),  # fmt: skip
    evaluation=Evaluation(thresholds=100),
    seeds=(0, 1, 2),
)
