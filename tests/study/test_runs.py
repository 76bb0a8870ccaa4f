"""Runs know their configuration: a result is never reported for another configuration than the
one asked for, a study is checked whole before anything trains, and two processes stay apart."""

import errno
import json
import os

import numpy as np
import pytest
import torch

import spgkit
from spgkit.distributed import Dist, reduce_device
from spgkit.plugins import PluginError, Registry, get_plugin_manager
from spgkit.runs import RunConflict, RunFolder, StudyFolder, scored_with
from spgkit.study import StudyError, load_study, override, run_study, select_arms


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock")


def test_changed_configuration_is_refused_retrained_or_reevaluated(tiny_study_file, registry, tmp_path):
    study = select_arms(load_study(tiny_study_file(epochs=1)), ["cam"])
    run_study(study, tmp_path, registry=registry, progress=False)
    run = StudyFolder(tmp_path, study).run("cam", 0)
    first = run.read_metrics()
    weights = run.checkpoint.read_bytes()
    # More epochs: the old numbers must not come back as the answer.
    longer = override(study, {"training.epochs": 2})
    with pytest.raises(RunConflict, match=r"cam/seed0 was trained with another configuration \(training\.epochs: 1 -> 2\).*--retrain"):
        run_study(longer, tmp_path, registry=registry, progress=False)
    assert run.read_metrics() == first and run.checkpoint.read_bytes() == weights  # nothing lost
    # Only how it is scored changed: evaluated again from the same checkpoint, not retrained.
    floats = override(study, {"evaluation.protocol": "float"})
    run_study(floats, tmp_path, registry=registry, progress=False)
    assert run.checkpoint.read_bytes() == weights
    again = run.read_metrics()
    assert again["protocol"] == "float" and first["protocol"] == "benchmark" and again["top1_acc"] == first["top1_acc"]
    assert "`float` protocol" in StudyFolder(tmp_path, study).results_md.read_text()
    # Asked to, it trains the longer run in place.
    run_study(longer, tmp_path, registry=registry, progress=False, retrain=True)
    assert len(run.read_log()) == 2 and json.loads(run.config.read_text())["training"]["training"]["epochs"] == 2


def _finish(run, config, **metrics):
    """Write what a finished run of ``config`` writes: figures.npz and per_image.npz, then metrics.json."""
    record = scored_with(config)
    images = {"image_id": np.array(["a", "b"]), "cam_iou": np.array([0.6, 0.1]), "largest_iou": np.zeros((2, 3)),
              "best_iou": np.zeros((2, 3, 3)), "iou_thresholds": np.array([30.0, 50.0, 70.0]),
              "figures": {"map": np.zeros((2, 4, 4), np.float32), "mean": np.zeros(3), "std": np.ones(3)}}  # fmt: skip
    run.write_per_image(images, record)
    run.write_metrics({"arm": "cam", "seed": 0, "protocol": "benchmark", "cam_threshold": 0.2, "top1_acc": 100.0,
                       "maxboxaccv2": 0.0, "test_images": 2, "record": record, **metrics})  # fmt: skip


def test_scores_of_another_evaluation_stay_until_replaced_and_never_count_as_the_new_ones(tmp_path):
    run = RunFolder(tmp_path / "cam" / "seed0")
    config = {"training": {"epochs": 1}, "evaluation": {"protocol": "benchmark"}}
    assert run.prepare(config) == "train"
    _finish(run, config)
    assert run.prepare(config) == "done"
    asked = {**config, "evaluation": {"protocol": "float"}}
    assert run.prepare(asked) == "evaluate"
    # Nothing deleted before its replacement exists (a corrupt checkpoint would leave no scores at
    # all), and the config records the new evaluation at once...
    assert run.metrics.exists() and run.per_image.exists() and run.read_config()["evaluation"] == {"protocol": "float"}
    # ...yet killed before the new scores were written, the next run scores again: the old scores
    # record what they were scored with.
    assert run.prepare(asked) == "evaluate"
    assert run.prepare(config) == "done"  # and stay valid for the evaluation they were made with
    # Half of a later scoring (per_image.npz of another evaluation beside the old metrics) is not used.
    run.write_per_image(run.read_per_image(), scored_with(asked))
    assert run.prepare(config) == "evaluate"


def test_a_reused_run_keeps_the_environment_that_made_it(tmp_path):
    run = RunFolder(tmp_path / "cam" / "seed0")
    config = {"training": {"epochs": 1}, "evaluation": {"protocol": "benchmark"}, "environment": {"torch": "2.13.0"}}
    run.prepare(config)
    _finish(run, config)
    later = {**config, "environment": {"torch": "2.14.1"}}
    assert run.prepare(later) == "done" and run.read_config()["environment"] == {"torch": "2.13.0"}
    # Scored again, it records the process that scored it.
    rescored = {**later, "evaluation": {"protocol": "float"}}
    assert run.prepare(rescored) == "evaluate" and run.read_config() == rescored


def test_a_resumed_run_records_the_evaluation_it_is_asked_for(tmp_path):
    # Killed before its metrics existed, then resumed with another evaluation setting.
    run = RunFolder(tmp_path / "cam" / "seed0")
    run.prepare({"training": {"epochs": 1}, "evaluation": {"thresholds": 100}})
    run.log.write_text("epoch\n1\n")
    asked = {"training": {"epochs": 1}, "evaluation": {"thresholds": 3}}
    assert run.prepare(asked) == "train" and run.read_config()["evaluation"] == {"thresholds": 3}


def test_retrain_always_trains_and_a_folder_where_nothing_trained_takes_the_new_configuration(tmp_path):
    run = RunFolder(tmp_path / "cam" / "seed0")
    config = {"training": {"epochs": 1}, "evaluation": {}}
    run.prepare(config)
    _finish(run, config)
    assert run.prepare(config, retrain=True) == "train" and not run.metrics.exists()
    # A failure after the check left config.json but nothing trained: the corrected run is not refused.
    other = RunFolder(tmp_path / "spg" / "seed0")
    other.prepare(config)
    assert other.prepare({**config, "training": {"epochs": 2}}) == "train"


def test_a_field_added_to_spgkit_after_a_run_counts_as_its_default(tmp_path):
    run = RunFolder(tmp_path / "cam" / "seed0")
    asked = {"training": {"training": {"epochs": 1, "compile": False}}, "evaluation": {"protocol": "benchmark", "thresholds": 100}}
    # Recorded before spgkit had Training.compile and Evaluation.thresholds.
    old = {"training": {"training": {"epochs": 1}}, "evaluation": {"protocol": "benchmark"}}
    run.prepare(old)
    _finish(run, old)
    assert run.prepare(asked) == "done"
    with pytest.raises(RunConflict, match=r"training\.compile: False -> True"):
        run.prepare({**asked, "training": {"training": {"epochs": 1, "compile": True}}})
    assert run.prepare({**asked, "evaluation": {"protocol": "benchmark", "thresholds": 1000}}) == "evaluate"


def test_a_run_from_before_the_benchmark_resize_is_not_reused_for_it(tmp_path):
    # Runs recorded before Data.resize existed resized with torchvision: not what the new default
    # ("benchmark", PIL and OpenCV) computes, so they are not reported for it.
    run = RunFolder(tmp_path / "cam" / "seed0")
    old = {"training": {"data": {"image_size": 32}}, "evaluation": {}}
    run.prepare(old)
    _finish(run, old)
    with pytest.raises(RunConflict, match=r"data\.resize: 'torchvision' -> 'benchmark'"):
        run.prepare({"training": {"data": {"image_size": 32, "resize": "benchmark"}}, "evaluation": {}})
    assert run.prepare({"training": {"data": {"image_size": 32, "resize": "torchvision"}}, "evaluation": {}}) == "done"


def test_folder_without_a_recorded_configuration_is_refused(tmp_path):
    run = RunFolder(tmp_path / "old")
    run.path.mkdir()
    run.metrics.write_text('{"maxboxaccv2": 99.0}')
    with pytest.raises(RunConflict, match="no config.json: made by an older spgkit"):
        run.prepare({"training": {}, "evaluation": {}})


def test_a_bad_argument_in_the_last_arm_fails_before_anything_is_written(tiny_study_file, registry, tmp_path):
    path = tiny_study_file(epochs=1)
    path.write_text(path.read_text().replace('HeadSpec("spg_c", {"width": 8})', 'HeadSpec("spg_c", {"widht": 8})'))
    with pytest.raises(StudyError, match=rf"{path}: arm 'spg': head 'spg_c': got an unexpected keyword argument 'widht'; it takes width, depth"):
        run_study(load_study(path), tmp_path / "out", registry=registry, progress=False, where=str(path))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"data.image_size": 8}, "arm 'cam': image size 8 is too small for backbone 'inception_v3'"),
        ({"training.device": "cuda:0"} if not torch.cuda.is_available() else {"training.device": "tpu"}, "training.device: "),
        ({"data.name": "synthwsool"}, "data: unknown dataset 'synthwsool'. Known datasets: cub (from spgkit (core datasets))"),
        ({"data.args.num_imgs": 8}, "data: dataset 'synthwsol': got an unexpected keyword argument 'num_imgs'"),
        ({"data.args.colour_cue": "maybe"}, "data: dataset 'synthwsol': argument 'colour_cue' must be bool, not 'maybe'"),
        ({"data.args.num_images": 8.0}, "data: dataset 'synthwsol': argument 'num_images' must be int, not 8.0"),
        ({"backbone_args.large_feature_map": 1}, "backbone: backbone 'inception_v3': argument 'large_feature_map' must be bool, not 1"),
        ({"backbone_args.weights": "/nowhere/w.pth"}, "backbone: weight file not found: /nowhere/w.pth"),
        ({"backbone_args.pretrained": True}, "backbone: pretrained 'inception_v3' weights: the hub cannot be reached"),
    ],
)
def test_study_is_checked_whole_before_training(setting, message, tiny_study_file, registry, tmp_path):
    study = override(load_study(tiny_study_file()), setting)
    with pytest.raises(StudyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_study(study, tmp_path, registry=registry, progress=False, where="s.py")
    assert not tmp_path.joinpath("tiny").exists()


def test_arms_subset_leaves_no_stale_reports(tiny_study_file, registry, tmp_path):
    study = load_study(tiny_study_file(epochs=1))
    folder = run_study(study, tmp_path, registry=registry, progress=False)
    assert folder.differences_csv.exists() and (folder.figures / "heads_spg.png").exists()
    run_study(select_arms(study, ["cam"]), tmp_path, registry=registry, progress=False)
    assert not folder.differences_csv.exists() and not (folder.figures / "heads_spg.png").exists()
    assert "| spg |" not in folder.results_md.read_text() and (folder.figures / "overlays.png").exists()


def test_lock_keeps_a_second_process_out(tmp_path):
    run = RunFolder(tmp_path / "r")
    with run.lock():
        with pytest.raises(RunConflict, match="another spgkit process is running this run"):
            with RunFolder(tmp_path / "r").lock():
                pass
    with run.lock():  # released
        pass


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_results_get_the_permissions_of_any_new_file(umask, mode, tmp_path):
    # A run folder a group shares: its files as readable as the umask allows, never 0600.
    from spgkit.io import save_checkpoint, write_json

    old = os.umask(umask)
    try:
        write_json(tmp_path / "metrics.json", {"top1": 1.0})
        save_checkpoint(tmp_path / "checkpoint.pt", {"weight": torch.zeros(1)})
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"metrics.json": mode, "checkpoint.pt": mode}


def test_nccl_reductions_run_on_the_process_gpu(monkeypatch):
    # No GPU here: the choice of device is pinned, and the reduction is shown to use it.
    assert reduce_device("nccl", torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert reduce_device("gloo", torch.device("cuda", 1)) == torch.device("cpu")
    seen = {}

    def fake_all_reduce(tensor):
        seen["device"] = tensor.device
        tensor.mul_(2)  # two ranks holding the same values

    monkeypatch.setattr(torch.distributed, "all_reduce", fake_all_reduce)
    total = Dist(rank=0, world=2, device=torch.device("cpu")).sum(torch.tensor([1.0, 2.5]).numpy())
    assert seen["device"] == torch.device("cpu") and total.tolist() == [2.0, 5.0]


def test_a_hook_that_raises_names_the_plugin():
    class Raises:
        @spgkit.hookimpl
        def spgkit_register_heads(self, register):
            raise KeyError("oops")

    pm = get_plugin_manager(autoload=False)
    pm.register(Raises(), name="broken (test)")
    with pytest.raises(PluginError, match=r"plugin 'broken \(test\)' failed in spgkit_register_heads: KeyError"):
        Registry(pm)


def test_a_full_disk_is_one_line(tiny_study_file, tmp_path, monkeypatch, capsys):
    from spgkit import io
    from spgkit.cli import main

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setenv("SPGKIT_DISABLE_PLUGIN_AUTOLOAD", "0")
    monkeypatch.setattr(io, "atomic_write_bytes", full)
    assert main(["run", str(tiny_study_file(epochs=1)), "--out", str(tmp_path), "--arms", "cam", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "config.json" in err
