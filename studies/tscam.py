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

    spgkit run studies/tscam.py

502 s on the 2-core CPU (one torch thread). At these 450 steps the scratch ViT stays at chance
(docs/results.rst): the study shows the mechanism, not yet an answer; give it many more steps
(``--epochs``) where time allows.

A different backbone from the CNN studies (a ViT from scratch, not Lite0 with ImageNet weights),
so its arms are compared with each other, not with ``studies/synth.py``'s.
"""

from spgkit import Arm, Data, Evaluation, HeadSpec, Study, Training

VIT = {"img_size": 96, "patch_size": 12, "embed_dim": 96, "depth": 4, "num_heads": 3}

STUDY = Study(
    name="tscam",
    data=Data("synthwsol", {"num_images": 4800, "image_size": 96, "num_classes": 4, "body_cue": 0.0}, image_size=96, max_eval=256),
    arms=(
        Arm("vit_cam", (HeadSpec("tscam", {"couple": False}),)),
        Arm("tscam", (HeadSpec("tscam"),)),
    ),
    backbone="timm:vit_tiny_patch16_224",
    backbone_args={"final_norm": True, "model_args": VIT},
    training=Training(
        epochs=3, batch_size=32, lr=0.05, new_layer_lr_mult=1.0, weight_decay=1e-4, grad_clip=1.0,
        schedule="onecycle", warmup=0.1, eval_every=0,
    ),  # fmt: skip
    evaluation=Evaluation(thresholds=100),
    seeds=(0, 1, 2),
)
