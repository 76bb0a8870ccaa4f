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
