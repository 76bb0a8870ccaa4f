"""Crash safety: a killed run resumes to the same result, a diverging run stops cleanly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import spgkit
from spgkit.heads import GuidanceHead, HeadOutput
from spgkit.io import load_checkpoint
from spgkit import Arm, HeadSpec
from spgkit.plugins import Registry
from spgkit.runs import RunFolder
from spgkit.study import load_study, run_study
from spgkit.train import TrainingDiverged, train_arm


def _spgkit(*args, **kwargs):
    env = {**os.environ, "SPGKIT_DISABLE_PLUGIN_AUTOLOAD": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "spgkit", *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


@pytest.mark.slow
def test_sigkill_mid_arm_then_rerun_gives_the_same_metrics(tiny_study_file, tmp_path):
    study = tiny_study_file(images=96, epochs=3)
    # Uninterrupted reference run.
    ref = _spgkit("run", study, "--out", tmp_path / "ref", "--arms", "spg", "--no-progress")
    assert ref.wait(timeout=600) == 0, ref.stdout.read().decode()
    # Interrupted run: SIGKILL once the first epoch's checkpoint exists, mid-way through the arm.
    run_dir = tmp_path / "killed" / "tiny" / "spg" / "seed0"
    proc = _spgkit("run", study, "--out", tmp_path / "killed", "--arms", "spg", "--no-progress")
    deadline = time.time() + 300
    while not (run_dir / "checkpoint.pt").exists():
        assert proc.poll() is None, "run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists(), "killed too late: the arm had finished"
    mid = load_checkpoint(run_dir / "checkpoint.pt")
    assert mid["epoch"] + 1 < 3 and {"optimizer", "scheduler"} <= mid.keys()  # what the resumed run needs
    again = _spgkit("run", study, "--out", tmp_path / "killed", "--arms", "spg", "--no-progress")
    assert again.wait(timeout=600) == 0, again.stdout.read().decode()
    expected = json.loads((tmp_path / "ref" / "tiny" / "spg" / "seed0" / "metrics.json").read_text())
    got = json.loads((run_dir / "metrics.json").read_text())
    assert got == expected
    final = load_checkpoint(run_dir / "checkpoint.pt")
    assert final["epoch"] == 2 and not {"optimizer", "scheduler"} & final.keys()  # a finished run never resumes
    leftovers = [p.name for p in run_dir.parent.parent.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    # A third run finds everything finished and trains nothing.
    done = _spgkit("run", study, "--out", tmp_path / "killed", "--arms", "spg", "--no-progress")
    assert done.wait(timeout=300) == 0
    assert os.path.getmtime(run_dir / "metrics.json") < time.time()  # untouched file still there
    assert json.loads((run_dir / "metrics.json").read_text()) == expected


class Explode(GuidanceHead):
    """A head whose loss turns NaN from the ``after``-th training call on."""

    name = "explode"

    def __init__(self, spec, *, after=4):
        super().__init__(spec)
        self.after = after
        self.calls = 0

    def forward(self, ctx):
        if ctx.labels is None or not self.training:
            return HeadOutput()
        self.calls += 1
        value = ctx.classifier.logits.sum() * 0
        return HeadOutput(losses={"x": value + (float("nan") if self.calls >= self.after else 0.0)})


@pytest.fixture
def explode_registry(plugin_manager):
    """The built-in methods and the exploding head."""

    class Plugin:
        @spgkit.hookimpl
        def spgkit_register_heads(self, register):
            register(Explode)

    plugin_manager.register(Plugin(), name="explode (test)")
    return Registry(plugin_manager)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tiny_study_file, explode_registry, tmp_path):
    registry = explode_registry
    study = load_study(tiny_study_file(images=24, epochs=3))
    # 24 images / batch 8 = 3 steps an epoch: epoch 1 is clean, NaN at the 4th step (epoch 2).
    arm = Arm("boom", (HeadSpec("explode", {"after": 4}),))
    out = tmp_path / "boom"
    with pytest.raises(TrainingDiverged, match=r"tiny/boom/seed0: loss is nan at epoch 2.*after epoch 1\) is kept"):
        train_arm(study, arm, 0, RunFolder(out), registry=registry, progress=False)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    # The divergence is recorded: a re-run of the same configuration reports it, trains nothing.
    record = json.loads((out / "metrics.json").read_text())
    assert record["diverged"].startswith("tiny/boom/seed0: loss is nan at epoch 2") and "maxboxaccv2" not in record
    assert train_arm(study, arm, 0, RunFolder(out), registry=registry, progress=False) == record


def test_a_diverging_arm_does_not_stop_the_study(tiny_study_file, explode_registry, tmp_path):
    import dataclasses

    study = load_study(tiny_study_file(images=24, epochs=1))
    study = dataclasses.replace(study, arms=(study.arms[0], Arm("boom", (HeadSpec("explode", {"after": 2}),))))
    with pytest.warns(UserWarning, match="tiny/boom/seed0: loss is nan at epoch 1"):
        folder = run_study(study, tmp_path, registry=explode_registry, progress=False)
    table = folder.results_md.read_text()
    assert "| boom | 0 (+1 diverged) | - |" in table and "| cam | 1 |" in table
    assert "Diverged runs, left out of every number: boom (1 of 1)" in table
    assert (folder.figures / "overlays.png").exists()


def test_the_log_is_written_before_the_checkpoint(tiny_study_file, monkeypatch, tmp_path):
    # A kill between the two writes: after the last epoch's checkpoint, the resumed run trains
    # nothing and would never write the log again; before it, the epoch trains again.
    study = load_study(tiny_study_file(epochs=2))
    arm = study.arms[0]
    run = RunFolder(tmp_path / "run")

    def killed(self, payload):
        raise KeyboardInterrupt

    monkeypatch.setattr(RunFolder, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        train_arm(study, arm, 0, run, registry=Registry(plugins=study.plugins), progress=False)
    assert len(run.log.read_text().splitlines()) == 2 and not run.checkpoint.exists()  # header and epoch 1
    monkeypatch.undo()
    train_arm(study, arm, 0, run, registry=Registry(plugins=study.plugins), progress=False)
    assert [row.split(",")[0] for row in run.log.read_text().splitlines()[1:]] == ["1", "2"]
