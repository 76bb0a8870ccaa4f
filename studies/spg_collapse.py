"""Why SPG collapses in short fine-tuning: one controlled change at a time, three seeds each.

The quickstart's settings (SynthWSOL at 96 pixels, EfficientNet-Lite0 cut after its stride-8 stage,
300 steps of 16 images), where SPG-B diverges and SPG loses its classification on some seeds. The
first arm is SPG as the reference codes compute it; every other arm changes one thing, and the
table's paired differences compare each with it, seed by seed. Snapshots of the guidance are
recorded every 25 steps (``figures/evolution_<arm>.png``).

Head-level changes are arms of this study; training-level ones are the same study run again with
one field changed (only the reference arm, so each row differs from the reference in one thing)::

    spgkit run studies/spg_collapse.py
    spgkit run studies/spg_collapse.py --arms spg --set training.new_layer_lr_mult=1 --set name=spg_collapse_lr1
    spgkit run studies/spg_collapse.py --arms spg --set training.schedule=onecycle --set name=spg_collapse_onecycle
    spgkit run studies/spg_collapse.py --arms spg --set training.grad_clip=1 --set name=spg_collapse_clip1
    python docs/scripts/collapse_table.py runs/

About 45 minutes in all on a 2-core CPU; the findings are in docs/concepts.rst.
"""

from spgkit import Arm, Data, Evaluation, HeadSpec, Study, Training

WIDTH = {"width": 128}
SPG_C = HeadSpec("spg_c", WIDTH)

STUDY = Study(
    name="spg_collapse",
    data=Data("synthwsol", {"num_images": 4800, "image_size": 96, "num_classes": 4}, image_size=96, max_eval=256),
    arms=(
        Arm("spg", (HeadSpec("spg_b", WIDTH), SPG_C)),
        # B1 and B2 with their own second and output layers.
        Arm("spg_unshared", (HeadSpec("spg_b", {**WIDTH, "shared": False}), SPG_C)),
        # B1's and C's seeds from min-max normalised scores instead of raw sigmoids.
        Arm("spg_norm", (HeadSpec("spg_b", {**WIDTH, "normalize_scores": True}), HeadSpec("spg_c", {**WIDTH, "normalize_scores": True}))),
        # C learns without sending its gradient back into the trunk.
        Arm("spg_no_feedback", (HeadSpec("spg_b", WIDTH), HeadSpec("spg_c", {**WIDTH, "feedback": False}))),
        # B2's seed at the SPG code's (0.7, 0.05): more background than the benchmark's (0.7, 0.01).
        Arm("spg_b2_spg_code", (HeadSpec("spg_b", {**WIDTH, "b2_thresholds": "spg_code"}), SPG_C)),
        Arm("cam"),
    ),
    backbone="tf_efficientnet_lite0",
    backbone_args={"pretrained": True, "roles": {"low": 1, "mid": 1, "late": 2, "high": 2}, "output_stride": None},
    classifier_width=256,
    training=Training(epochs=1, batch_size=16, lr=0.003, new_layer_lr_mult=10.0, schedule="cosine", eval_every=0, snapshot_every=25),
    evaluation=Evaluation(thresholds=100),
    seeds=(0, 1, 2),
)
