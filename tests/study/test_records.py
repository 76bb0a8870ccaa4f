"""A run's record: everything its numbers depend on is recorded, and a report uses a run only for
the configuration, code and data it was made with. Each test fails where spgkit reported, reused
or deleted results it should not have."""

import dataclasses
import importlib.util
import json
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import spgkit
from spgkit.config import ConfigError
from spgkit.plugins import Registry
from spgkit.record import data_fingerprint
from spgkit.report import Collected, near_chance, write_tables
from spgkit.runs import RunConflict, RunFileError, RunFolder, StudyFolder
from spgkit.study import StudyError, load_study, override, run_study, select_arms

HEAD = '''
import spgkit
from spgkit.heads import GuidanceHead, HeadOutput


class Mine(GuidanceHead):
    """A head of one file: a small penalty on the CAM's logits."""

    name = "mine"

    def forward(self, ctx):
        return HeadOutput(losses={"penalty": {scale} * ctx.classifier.logits.pow(2).mean()})


@spgkit.hookimpl
def spgkit_register_heads(register):
    register(Mine)
'''


def _head_registry(plugin_manager, path, scale):
    """The built-in methods and the head in ``path`` (written with ``scale``), imported afresh as an
    editable install's module would be after an edit."""
    path.write_text(textwrap.dedent(HEAD.replace("{scale}", str(scale))))
    spec = importlib.util.spec_from_file_location("spgkit_test_mine", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["spgkit_test_mine"] = module
    spec.loader.exec_module(module)
    plugin_manager.register(module, name="mine (test)")
    return Registry(plugin_manager)


def test_an_edited_head_invalidates_its_runs_and_retrain_always_trains(tiny_study_file, plugin_manager, tmp_path):
    study = load_study(tiny_study_file(epochs=1))
    study = dataclasses.replace(study, arms=(study.arms[0], spgkit.Arm("mine", (spgkit.HeadSpec("mine"),))))
    registry = _head_registry(plugin_manager, tmp_path / "mine.py", 0.01)
    folder = run_study(study, tmp_path / "out", registry=registry, progress=False)
    assert folder.actions == {"train": 2}
    recorded = json.loads(folder.run("mine", 0).config.read_text())["training"]["sources"]
    assert set(recorded) == {"dataset synthwsol", "backbone inception_v3", "head mine"}
    # The same code again: reused, nothing trained.
    assert run_study(study, tmp_path / "out", registry=registry, progress=False).actions == {"done": 2}
    # A fix in the head's file: its run is not reused, the CAM run (which does not use it) is.
    plugin_manager.unregister(name="mine (test)")
    registry = _head_registry(plugin_manager, tmp_path / "mine.py", 0.02)
    with pytest.raises(RunConflict, match=r"mine/seed0 was trained with another configuration \(sources\.head mine: '[0-9a-f]{16}' -> '[0-9a-f]{16}'\)"):
        run_study(study, tmp_path / "out", registry=registry, progress=False)
    # --retrain trains again even where nothing changed.
    assert run_study(study, tmp_path / "out", registry=registry, progress=False, retrain=True).actions == {"train": 2}


def _photos(root, boxes):
    """A folder_csv dataset of 16 two-class photos (a bright square on noise) and its CSVs."""
    rng = np.random.default_rng(0)
    rows = {"train": ["image,label,x0,y0,x1,y1"], "test": ["image,label,x0,y0,x1,y1"]}
    for i in range(16):
        pixels = rng.integers(0, 80, (48, 48, 3), dtype=np.uint8)
        x = 4 + 3 * (i % 8)
        pixels[x : x + 16, x : x + 16] = (250, 40 + 200 * (i % 2), 40)
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / f"img/{i}.png")
        split = "test" if i >= 12 else "train"
        rows[split].append(f"img/{i}.png,{'ab'[i % 2]},{x},{x},{x + 16 + boxes},{x + 16}")
    for split, lines in rows.items():
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")


def test_data_changed_after_a_run_is_scored_again_or_refused(tiny_study_file, registry, tmp_path):
    root = tmp_path / "photos"
    _photos(root, boxes=0)
    study = override(
        select_arms(load_study(tiny_study_file(epochs=1)), ["cam"]),
        {"data.name": "folder_csv", "data.args": {"root": str(root)}, "data.select_split": "none", "data.holdout": 4,
         "data.image_size": 48, "training.batch_size": 4},
    )  # fmt: skip
    folder = run_study(study, tmp_path / "out", registry=registry, progress=False)
    run = folder.run("cam", 0)
    weights, first = run.checkpoint.read_bytes(), run.read_metrics()
    # test.csv rewritten (an image relabelled): scored again from the same weights, not the old table.
    (root / "test.csv").write_text((root / "test.csv").read_text().replace("img/12.png,a,", "img/12.png,b,"))
    assert run_study(study, tmp_path / "out", registry=registry, progress=False).actions == {"evaluate": 1}
    assert run.checkpoint.read_bytes() == weights and run.read_metrics()["record"] != first["record"]
    # train.csv rewritten: the weights were learnt from other data.
    (root / "train.csv").write_text((root / "train.csv").read_text().replace("img/0.png,a,", "img/0.png,b,"))
    with pytest.raises(RunConflict, match=r"splits\.train: '[0-9a-f]{16}' -> '[0-9a-f]{16}'"):
        run_study(study, tmp_path / "out", registry=registry, progress=False)


def test_data_fingerprint_follows_what_the_split_is(tmp_path):
    from spgkit.data import FolderCSV

    root = tmp_path / "photos"
    _photos(root, boxes=0)
    first = data_fingerprint(FolderCSV(root, split="test"))
    assert data_fingerprint(FolderCSV(root, split="test")) == first  # stable
    _photos(root, boxes=2)  # one box column moves by two pixels
    assert data_fingerprint(FolderCSV(root, split="test")) != first
    _photos(root, boxes=0)
    Image.new("RGB", (48, 48)).save(root / "img/13.png")  # same annotation, another image file
    assert data_fingerprint(FolderCSV(root, split="test")) != first
    assert data_fingerprint(object()) is None  # no records: made by its arguments and code


def test_the_report_never_mixes_configurations(tiny_study_file, registry, tmp_path):
    study = load_study(tiny_study_file(epochs=1))
    folder = run_study(study, tmp_path, registry=registry, progress=False)
    # Another process retrains cam with 2 epochs in the same folder (what --retrain there does).
    run_study(override(study, {"training.epochs": 2}), tmp_path, registry=registry, progress=False, retrain=True, arms=["cam"])
    text = folder.results_md.read_text()
    assert "| spg |" not in text.split("Left out")[0] and "- spg/seed0: scored with another configuration (training.epochs: 1 -> 2)" in text
    # The 1-epoch study's report, written again, leaves the 2-epoch cam out and says why.
    from spgkit.study import write_report
    from spgkit.splits import study_facts

    collected = write_report(study, folder, registry, study_facts(study, registry))
    assert list(collected.metrics) == ["spg"] and collected.left_out == ["cam/seed0: scored with another configuration (training.epochs: 2 -> 1)"]


def test_an_edited_per_image_file_is_refused_by_the_report(tiny_study_file, registry, tmp_path):
    study = load_study(tiny_study_file(epochs=1))
    folder = run_study(study, tmp_path, registry=registry, progress=False)
    run = folder.run("spg", 0)
    record = run.read_per_image()
    record["cam_iou"][:] = 1.0  # every image a hit: what bootstrap intervals of [+100, +100] came from
    run.write_per_image({k: v for k, v in record.items() if k != "record"}, run.read_metrics()["record"])
    with pytest.raises(RunFileError, match=r"spg/seed0/per_image.npz: gives GT-known Loc 100.00 where metrics.json says \d+\.\d\d; it was edited or damaged"):
        run_study(study, tmp_path, registry=registry, progress=False)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda run: run.config.write_text("{}"), r"config.json: not a run configuration"),
        (lambda run: run.config.write_text("{"), r"config.json: not valid JSON"),
        (lambda run: run.metrics.write_text(json.dumps({k: v for k, v in json.loads(run.metrics.read_text()).items() if k != "cam_threshold"})),
         r"metrics.json: not a run's metrics \(no cam_threshold\)"),
        (lambda run: run.per_image.write_bytes(run.per_image.read_bytes()[:100]), r"per_image.npz: not readable"),
        (lambda run: np.savez(run.per_image, image_id=np.array(["a"])), r"per_image.npz: lacks cam_iou, largest_iou, best_iou, iou_thresholds"),
    ],
)
def test_damaged_run_files_are_one_line_errors_naming_the_file(damage, message, tiny_study_file, registry, tmp_path):
    study = select_arms(load_study(tiny_study_file(epochs=1)), ["cam"])
    folder = run_study(study, tmp_path, registry=registry, progress=False)
    run = folder.run("cam", 0)
    damage(run)
    with pytest.raises(RunFileError, match=message + r".*delete the run's folder, or re-run with --retrain") as caught:
        run_study(study, tmp_path, registry=registry, progress=False)
    assert "\n" not in str(caught.value)


def test_a_changed_study_is_refused_before_any_arm_trains(tiny_study_file, registry, tmp_path):
    study = load_study(tiny_study_file(epochs=1))
    run_study(select_arms(study, ["spg"]), tmp_path, registry=registry, progress=False)
    # cam comes first and is new, spg was trained otherwise: nothing trains, not even cam.
    with pytest.raises(RunConflict, match=r"tiny/spg/seed0 was trained with another configuration \(training.lr: 0.02 -> 0.01\)"):
        run_study(override(study, {"training.lr": 0.01}), tmp_path, registry=registry, progress=False)
    assert not (tmp_path / "tiny/cam").exists()


def test_a_checkpoint_that_cannot_be_resumed_is_named(tiny_study_file, registry, tmp_path):
    import torch

    study = select_arms(load_study(tiny_study_file(epochs=2)), ["cam"])
    run = run_study(study, tmp_path, registry=registry, progress=False).run("cam", 0)
    metrics = run.read_metrics()
    # The last epoch's checkpoint has no optimiser or scheduler (nothing trains on from it), and
    # is all that scoring the run again needs: as if killed after it was written, before it was scored.
    assert not {"optimizer", "scheduler"} & torch.load(run.checkpoint, weights_only=True).keys()
    run.metrics.unlink()
    again = run_study(study, tmp_path, registry=registry, progress=False)
    assert again.run("cam", 0).read_metrics() == metrics and again.actions == {"evaluate": 1}
    run.metrics.unlink()  # the next run resumes from an epoch-0 checkpoint, which must have them
    state = {"config": {}, "model": {}, "epoch": 0, "history": [], "arm": "cam", "seed": 0}
    torch.save(state, run.checkpoint)
    with pytest.raises(RunFileError, match=r"checkpoint.pt: not a checkpoint spgkit can resume from \(no optimizer, scheduler\)"):
        run_study(study, tmp_path, registry=registry, progress=False)
    torch.save([1, 2, 3], run.checkpoint)
    with pytest.raises(RunFileError, match=r"checkpoint.pt: not a checkpoint spgkit can resume from \(a list, not a dict\)"):
        run_study(study, tmp_path, registry=registry, progress=False)
    torch.save({**state, "optimizer": {}, "scheduler": {}, "arm": "spg"}, run.checkpoint)
    with pytest.raises(RunFileError, match=r"a checkpoint of arm 'spg' seed 0, not of 'cam' seed 0"):
        run_study(study, tmp_path, registry=registry, progress=False)


def test_scores_survive_an_unreadable_checkpoint_when_the_evaluation_changes(tiny_study_file, registry, tmp_path):
    study = select_arms(load_study(tiny_study_file(epochs=1)), ["cam"])
    folder = run_study(study, tmp_path, registry=registry, progress=False)
    run = folder.run("cam", 0)
    metrics, per_image = run.metrics.read_bytes(), run.per_image.read_bytes()
    run.checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"checkpoint.pt: not a readable spgkit checkpoint"):
        run_study(override(study, {"evaluation.protocol": "float"}), tmp_path, registry=registry, progress=False)
    assert run.metrics.read_bytes() == metrics and run.per_image.read_bytes() == per_image


def test_the_test_split_is_never_the_selection_split_unless_said_loudly(tiny_study_file, registry, tmp_path):
    study = load_study(tiny_study_file(epochs=1))
    with pytest.raises(StudyError, match=r"select_split is the test split 'test'.*data.select_on_test=true"):
        override(study, {"data.select_split": "test"})
    loud = override(select_arms(study, ["cam"]), {"data.select_on_test": True, "data.select_split": "test"})
    text = run_study(loud, tmp_path, registry=registry, progress=False).results_md.read_text()
    assert text.split("\n")[2].startswith("**The CAM threshold was chosen on the test split (test)**")


@pytest.mark.parametrize("name", ["..", "/tmp/elsewhere", "a/../../b", ".hidden", ""])
def test_names_cannot_reach_outside_the_output_folder(name, tiny_study_file, tmp_path):
    study = load_study(tiny_study_file(epochs=1))
    with pytest.raises(StudyError, match=r"--set name: .*Study.name must be a folder name"):
        override(study, {"name": name})
    with pytest.raises(StudyError, match=r"arms\.cam\.name: .*Arm.name must be a folder name"):
        override(study, {"arms.cam.name": name})
    with pytest.raises(ConfigError, match="must be a folder name"):
        spgkit.Study(name=name, data=study.data, arms=study.arms)


def test_a_head_whose_loss_fails_stops_the_study_before_anything_trains(tiny_study_file, plugin_manager, tmp_path):
    broken = HEAD.replace("return HeadOutput", "assert ctx.labels is None, 'labels break me'\n        return HeadOutput")
    path = tmp_path / "broken.py"
    path.write_text(textwrap.dedent(broken.replace("{scale}", "1")))
    spec = importlib.util.spec_from_file_location("spgkit_test_broken", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin_manager.register(module, name="broken (test)")
    study = load_study(tiny_study_file(epochs=1))
    study = dataclasses.replace(study, arms=(*study.arms, spgkit.Arm("mine", (spgkit.HeadSpec("mine"),))))
    with pytest.raises(StudyError, match=r"s.py: arm 'mine': .*labels break me"):
        run_study(study, tmp_path / "out", registry=Registry(plugin_manager), progress=False, where="s.py")
    assert not (tmp_path / "out").exists()


def test_arms_adds_to_the_full_report(tiny_study_file, registry, tmp_path):
    study = load_study(tiny_study_file(epochs=1))
    folder = run_study(study, tmp_path, registry=registry, progress=False, arms=["spg"])
    assert "| spg | 1 |" in folder.results_md.read_text() and not folder.differences_csv.exists()  # no baseline yet
    folder = run_study(study, tmp_path, registry=registry, progress=False, arms=["cam"])
    assert folder.actions == {"train": 1}
    text = folder.results_md.read_text()
    # spg's row and figures stay, and it is compared with the study's baseline, cam.
    assert "| spg | 1 |" in text.split("Difference from cam")[1] and (folder.figures / "heads_spg.png").exists()


def test_near_chance_by_hand():
    # 4 classes, 256 test images: chance 25 %, a guesser's standard error sqrt(.25 * .75 / 256) =
    # 2.706 points, so the bound is 25 + 2.58 * 2.706 = 31.98.
    run = {"num_classes": 4, "test_images": 256}
    assert near_chance([{**run, "top1_acc": 31.9}]) and not near_chance([{**run, "top1_acc": 32.1}])
    assert near_chance([{**run, "top1_acc": 20.0}, {**run, "top1_acc": 43.0}])  # the mean over seeds, 31.5


def test_the_table_shows_the_centre_baseline_and_the_reading_flags_chance(tmp_path):
    study = spgkit.Study(name="s", data=spgkit.Data("synthwsol"), arms=(spgkit.Arm("cam"), spgkit.Arm("x")), seeds=(0,))
    part = {"part_maxboxaccv2": 55.0, "object_covered": 35.0, "on_part": 30.0, "num_classes": 4, "test_images": 256, "protocol": "benchmark"}
    collected = Collected({"cam": [{"seed": 0, "maxboxaccv2": 30.0, "top1_acc": 26.0, **part}],
                           "x": [{"seed": 0, "maxboxaccv2": 45.0, "top1_acc": 24.0, **part, "object_covered": 80.0}]})  # fmt: skip
    text = write_tables(study, StudyFolder(tmp_path, study), collected, {"maxboxaccv2": 40.0, "gt_known_loc": 20.0})
    assert "| *centre baseline* | - | - | 20.0 | 40.0 | - | - | - |" in text
    assert "At chance: cam, x" in text and "No better than a centred Gaussian: cam (MaxBoxAccV2 at most the centre baseline's 40.0)" in text
    # Every arm at chance: nothing is ranked as covering the most of the object.
    assert "covers the most" not in text
    assert "centre" not in (tmp_path / "s" / "results.csv").read_text()  # the arms alone
