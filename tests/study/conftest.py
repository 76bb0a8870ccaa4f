import textwrap

import pytest

from spgkit.cli import main

TINY_STUDY = """
from spgkit import Arm, Data, Evaluation, HeadSpec, Study, Training

STUDY = Study(
    name="tiny",
    data=Data("synthwsol", {{"num_images": {images}, "image_size": 40, "num_classes": 3}}, image_size=40, max_eval=12),
    arms=(
        Arm("cam"),
        Arm("spg", (HeadSpec("spg_b", {{"width": 8}}), HeadSpec("spg_c", {{"width": 8}}))),
    ),
    classifier_width=16,
    training=Training(epochs={epochs}, batch_size=8, lr=0.02, new_layer_lr_mult=1.0, device="cpu", log_every=2),
    evaluation=Evaluation(thresholds=20),
    seeds=(0,),
    figure_images=3,
)
"""


@pytest.fixture
def tiny_study_file(tmp_path):
    """Write a tiny two-arm study file; returns a function taking (images, epochs)."""

    def write(images: int = 24, epochs: int = 2, name: str = "tiny.py"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(TINY_STUDY.format(images=images, epochs=epochs)))
        return path

    return write


@pytest.fixture
def autoload(monkeypatch):
    """The CLI as installed: plugins come from entry points."""
    monkeypatch.setenv("SPGKIT_DISABLE_PLUGIN_AUTOLOAD", "0")


@pytest.fixture
def trained(autoload, tmp_path_factory, tiny_study_file):
    """The checkpoint of a finished tiny CAM run (one epoch of :data:`TINY_STUDY`)."""
    out = tmp_path_factory.mktemp("trained")
    assert main(["run", str(tiny_study_file(epochs=1)), "--out", str(out), "--arms", "cam", "--no-progress"]) == 0
    return out / "tiny" / "cam" / "seed0" / "checkpoint.pt"


HEAD_FILE = '''
"""A head in one file: a 1x1 conv on the high stage that learns the squashed CAM of the true class."""
import torch.nn.functional as F
from torch import nn

import spgkit
from spgkit.guidance import class_maps
from spgkit.heads import GuidanceHead, HeadOutput


class Objectness(GuidanceHead):
    name = "objectness"

    def __init__(self, spec):
        super().__init__(spec)
        self.conv = nn.Conv2d(spec.stage("high").channels, 1, 1)

    def forward(self, ctx):
        logits = self.conv(ctx.features["high"])
        if ctx.labels is None:
            return HeadOutput(map=logits)
        target = class_maps(ctx.classifier.cams.detach(), ctx.labels).sigmoid()
        return HeadOutput(losses={"bce": F.binary_cross_entropy_with_logits(logits[:, 0], target)}, map=logits)


@spgkit.hookimpl
def spgkit_register_heads(register):
    register(Objectness)
'''

STUDY_WITH_HEAD_FILE = """
from spgkit import Arm, Data, Evaluation, HeadSpec, Study, Training

STUDY = Study(
    name="local",
    data=Data("synthwsol", {"num_images": 24, "image_size": 40, "num_classes": 3}, image_size=40, max_eval=12),
    arms=(Arm("cam"), Arm("objectness", (HeadSpec("objectness"),))),
    classifier_width=16,
    training=Training(epochs=1, batch_size=8, lr=0.02, new_layer_lr_mult=1.0, device="cpu"),
    evaluation=Evaluation(thresholds=20),
    figure_images=2,
    plugins=("objectness.py",),
)
"""


@pytest.fixture
def study_with_head_file(tmp_path):
    """Write ``study/local.py``, whose head lives in ``study/objectness.py`` beside it (not written
    with ``head=False``); returns the study file's path."""

    def write(head: bool = True):
        (tmp_path / "study").mkdir(exist_ok=True)
        if head:
            (tmp_path / "study" / "objectness.py").write_text(textwrap.dedent(HEAD_FILE))
        (tmp_path / "study" / "local.py").write_text(textwrap.dedent(STUDY_WITH_HEAD_FILE))
        return tmp_path / "study" / "local.py"

    return write
