"""``spgkit evaluate``, ``score`` and ``localize`` under a hostile user (issue 21): maps of any
scale, no default CAM threshold that the two scoring commands disagree on, a checkpoint's classes
matched by name, the study's image cap, nonsense numbers, diverged runs, rotated photos, Ctrl-C,
and the centre baseline. Every user error is one line on stderr, status 2, no traceback."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import spgkit.cli as cli
from spgkit.cli import main
from spgkit.data import eval_transform, make_sample
from spgkit.io import load_checkpoint, save_checkpoint

SYNTH = ["--data", "synthwsol", "--data-arg", "num_images=12", "--data-arg", "image_size=40", "--data-arg", "num_classes=3"]
STUDY = """
from spgkit import Arm, Data, Evaluation, Study, Training

STUDY = Study(
    name="tiny",
    data=Data("synthwsol", {{"num_images": {images}, "image_size": 40, "num_classes": 3}}, image_size=40, max_eval=12),
    arms=(Arm("cam"),),
    classifier_width=16,
    training=Training(epochs={epochs}, batch_size=8, lr=0.02, new_layer_lr_mult=1.0, device="cpu", log_every=2),
    evaluation=Evaluation(thresholds=20),
    seeds=(0,),
    figure_images=3,
)
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A finished one-epoch CAM run of a tiny SynthWSOL study (24 images; max_eval 12): its
    checkpoint, with metrics.json beside it."""
    folder = tmp_path_factory.mktemp("robust")
    study = folder / "tiny.py"
    study.write_text(textwrap.dedent(STUDY.format(images=24, epochs=1)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPGKIT_DISABLE_PLUGIN_AUTOLOAD", "0")
        assert main(["run", str(study), "--out", str(folder / "out"), "--no-progress"]) == 0
    return folder / "out" / "tiny" / "cam" / "seed0" / "checkpoint.pt"


@pytest.fixture
def autoload(monkeypatch):
    monkeypatch.setenv("SPGKIT_DISABLE_PLUGIN_AUTOLOAD", "0")


def run_main(capsys, *argv):
    """``main(argv)``: (status, stdout, stderr after any progress bar a terminal overwrites)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main()")
    out, err = capsys.readouterr()
    return code, out, "\n".join(line.rsplit("\r", 1)[-1] for line in err.split("\n"))


def one_line_error(capsys, *argv) -> str:
    """The one stderr line of a command that must fail as a user error (status 2, no traceback)."""
    code, _, err = run_main(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def box_dataset(tmp_path, boxes, size=32, name="data"):
    """A folder_csv dataset of blank ``size`` x ``size`` images, one per box (exclusive corners)."""
    root = tmp_path / name
    root.mkdir()
    rows = ["image,label,x0,y0,x1,y1"]
    for k, box in enumerate(boxes):
        Image.new("RGB", (size, size), (90, 120, 30)).save(root / f"{k}.png")
        rows.append(f"{k}.png,thing,{','.join(map(str, box))}")
    (root / "test.csv").write_text("\n".join(rows) + "\n")
    return root


# ---------------------------------------------------------------------------------------- 1


def test_maps_times_1e300_or_1e_50_score_as_the_maps_themselves(tmp_path, capsys):
    """A map that is the object's box localizes it perfectly; times 1e300 (which overflows
    float32) or 1e-50 (which underflows it) it must still, as min-max normalisation is scale
    invariant. The float32 cast used to turn both into flat maps, which localize nothing."""
    boxes = [(4, 6, 20, 30), (10, 2, 31, 14)]
    root = box_dataset(tmp_path, boxes)
    results = {}
    for scale in (1.0, 1e300, 1e-50):
        maps = tmp_path / f"maps_{scale:g}"
        maps.mkdir()
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            box_map = np.zeros((32, 32))
            box_map[y0:y1, x0:x1] = 1
            np.save(maps / f"{k}.png.npy", (box_map if scale == 1 else box_map * scale).astype(np.float32 if scale == 1 else np.float64))
        report = tmp_path / f"{scale:g}.json"
        code, _, err = run_main(capsys, "score", "--maps", maps, "--data", "folder_csv", "--root", root,
                                "--image-size", "32", "--thresholds", "10", "--cam-threshold", "0.5", "--json", report)  # fmt: skip
        assert code == 0, err
        results[scale] = json.loads(report.read_text())
    assert results[1.0]["maxboxacc"] == results[1.0]["gt_known_loc"] == results[1.0]["maxboxaccv2_iou70"] == 100
    assert results[1e300] == results[1.0] and results[1e-50] == results[1.0]


def test_ordinary_maps_are_cast_bit_for_bit_and_extreme_ones_rescaled():
    from spgkit.score import as_float32_map

    rng = np.random.default_rng(0)
    ordinary = rng.random((5, 7), dtype=np.float32) * 30 - 4
    assert as_float32_map(ordinary) is ordinary or np.array_equal(as_float32_map(ordinary).view(np.uint32), ordinary.view(np.uint32))
    wide = rng.standard_normal((5, 7)) * 1e3  # float64 of ordinary range: the plain cast, as before
    assert np.array_equal(as_float32_map(wide).view(np.uint32), wide.astype(np.float32).view(np.uint32))
    # Out of float32's reach: min-max normalised in float64 first, exactly (0 -> 0, 1 -> 1).
    unit = np.array([[0.0, 0.25], [0.5, 1.0]])
    for scale in (1e300, 1e-50, -1e200):
        expected = unit if scale > 0 else 1 - unit
        assert np.array_equal(as_float32_map(unit * scale), expected.astype(np.float32))
    # A float64 map whose range float32 cannot resolve beside its offset, and a huge flat map.
    assert np.array_equal(as_float32_map(1e9 + unit), unit.astype(np.float32))
    assert np.array_equal(as_float32_map(np.full((2, 2), 1e300)), np.zeros((2, 2), np.float32))


# ---------------------------------------------------------------------------------------- 2


def model_outputs(checkpoint, folder):
    """The raw maps of the ground-truth classes and the logits, as another code base would write
    them, for the 12 SynthWSOL test images of :data:`SYNTH`."""
    from torch.utils.data import DataLoader

    from spgkit.data import SynthWSOL, collate
    from spgkit.runs import load_model

    model, config = load_model(checkpoint)
    dataset = SynthWSOL(split="test", num_images=12, image_size=40, num_classes=3,
                        transform=eval_transform(config["image_size"], config["mean"], config["std"], config["resize"]))  # fmt: skip
    (batch,) = DataLoader(dataset, batch_size=64, collate_fn=collate)
    with torch.no_grad():
        out = model(batch["images"], classes=batch["labels"])
        maps = model.localization_maps(out, batch["labels"]).float()
    np.savez(folder / "maps.npz", **dict(zip(batch["image_ids"], maps.numpy())))
    np.savez(folder / "logits.npz", **dict(zip(batch["image_ids"], out.logits.numpy())))
    return folder / "maps.npz", folder / "logits.npz"


def test_score_and_evaluate_agree_by_default_and_record_the_threshold(autoload, checkpoint, tmp_path, capsys):
    maps, logits = model_outputs(checkpoint, tmp_path)
    bare = tmp_path / "bare" / "checkpoint.pt"  # no run beside it: no trained threshold
    bare.parent.mkdir()
    shutil.copy(checkpoint, bare)
    reports = {}
    for name, argv in {
        "evaluate": ["evaluate", bare, *SYNTH, "--device", "cpu"],
        "score": ["score", "--maps", maps, "--logits", logits, "--image-size", "40", *SYNTH],
    }.items():
        reports[name] = tmp_path / f"{name}.json"
        code, out, err = run_main(capsys, *argv, "--json", reports[name])
        assert code == 0, err
        assert "Loc left out" in out
    evaluated, scored = (json.loads(reports[k].read_text()) for k in ("evaluate", "score"))
    # No threshold was chosen on held-out data: no Loc from either, the same threshold-free numbers.
    assert evaluated == scored
    assert scored["cam_threshold"] is None and scored["cam_threshold_from"] is None
    assert not {"gt_known_loc", "top1_loc", "top5_loc", "on_part", "object_covered"} & scored.keys()
    assert {"maxboxacc", "maxboxaccv2", "pxap", "part_maxboxaccv2", "top1_acc"} <= scored.keys()
    # The run's own threshold, chosen on its selection split, is what evaluate takes beside it,
    # and the JSON says which and from where; score at the same threshold gives the same numbers.
    chosen = json.loads((checkpoint.parent / "metrics.json").read_text())["cam_threshold"]
    assert run_main(capsys, "evaluate", checkpoint, *SYNTH, "--device", "cpu", "--json", reports["evaluate"])[0] == 0
    assert run_main(capsys, "score", "--maps", maps, "--logits", logits, "--image-size", "40", *SYNTH,
                    "--cam-threshold", chosen, "--json", reports["score"])[0] == 0  # fmt: skip
    evaluated, scored = (json.loads(reports[k].read_text()) for k in ("evaluate", "score"))
    assert evaluated["cam_threshold"] == scored["cam_threshold"] == chosen
    assert evaluated["cam_threshold_from"] == str(checkpoint.parent / "metrics.json") and scored["cam_threshold_from"] == "--cam-threshold"
    assert {k: v for k, v in evaluated.items() if k != "cam_threshold_from"} == {k: v for k, v in scored.items() if k != "cam_threshold_from"}
    assert "gt_known_loc" in scored and "top1_loc" in scored and "on_part" in scored


def test_the_threshold_given_is_the_one_recorded(tmp_path, capsys):
    root = box_dataset(tmp_path, [(8, 8, 24, 24)])
    report = tmp_path / "out.json"
    code, out, err = run_main(capsys, "score", "--center-baseline", "--data", "folder_csv", "--root", root,
                              "--image-size", "32", "--cam-threshold", "0.35", "--json", report)  # fmt: skip
    assert code == 0, err
    metrics = json.loads(report.read_text())
    assert metrics["cam_threshold"] == 0.35 and metrics["cam_threshold_from"] == "--cam-threshold"
    assert "cam_threshold: 0.3500" in out


# ---------------------------------------------------------------------------------------- 3


def permuted_checkpoint(checkpoint, path, order):
    """The same model with its classes listed in ``order``: names and class rows permuted alike."""
    state = load_checkpoint(checkpoint)
    names = state["config"]["class_names"]
    state["config"]["class_names"] = [names[k] for k in order]
    for key, value in state["model"].items():
        if key.startswith("classifier.") and value.ndim and value.shape[0] == len(names):
            state["model"][key] = value[list(order)].clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, state)
    return path


def test_evaluate_matches_the_checkpoints_classes_by_name(autoload, checkpoint, tmp_path, capsys):
    reference = tmp_path / "reference.json"
    argv = [*SYNTH, "--device", "cpu", "--cam-threshold", "0.3"]
    assert run_main(capsys, "evaluate", checkpoint, *argv, "--json", reference)[0] == 0
    other = permuted_checkpoint(checkpoint, tmp_path / "other" / "checkpoint.pt", (2, 0, 1))
    report = tmp_path / "other.json"
    code, _, err = run_main(capsys, "evaluate", other, *argv, "--json", report)
    assert code == 0, err
    # Class k of the data is class (k + 1) % 3 of this checkpoint: matched by name, every number
    # (the maps of the right classes, the right top-1) is the original model's.
    expected = json.loads(reference.read_text())
    assert json.loads(report.read_text()) == expected and expected["top1_acc"] > 0
    # Names that differ as sets are refused, naming the classes.
    state = load_checkpoint(checkpoint)
    state["config"]["class_names"] = ["disc", "triangle", "star"]
    renamed = tmp_path / "renamed.pt"
    save_checkpoint(renamed, state)
    line = one_line_error(capsys, "evaluate", renamed, *argv)
    assert line == (f"spgkit evaluate: error: {renamed} and synthwsol split 'test' name different classes: "
                    "1 of the checkpoint's are not in the data ('star'); 1 of the data's are not in the checkpoint ('cross')")  # fmt: skip


# ---------------------------------------------------------------------------------------- 4


def test_evaluate_with_the_studys_cap_reproduces_the_runs_numbers(autoload, checkpoint, tmp_path, capsys):
    report = tmp_path / "capped.json"
    data = ["--data", "synthwsol", "--data-arg", "num_images=24", "--data-arg", "image_size=40", "--data-arg", "num_classes=3"]
    code, _, err = run_main(capsys, "evaluate", checkpoint, *data, "--thresholds", "20", "--batch-size", "8",
                            "--max-images", "12", "--device", "cpu", "--json", report)  # fmt: skip
    assert code == 0, err
    got = json.loads(report.read_text())
    run = json.loads((checkpoint.parent / "metrics.json").read_text())
    assert got["num_images"] == run["test_images"] == 12
    shared = [k for k in got if k in run and k not in ("protocol",)]
    assert {"maxboxaccv2", "gt_known_loc", "top1_acc", "pxap", "cam_threshold"} <= set(shared)
    assert {k: got[k] for k in shared} == {k: run[k] for k in shared}
    # Uncapped, the 24 test images give other numbers: the cap is what reproduces the run.
    assert run_main(capsys, "evaluate", checkpoint, *data, "--thresholds", "20", "--device", "cpu", "--json", report)[0] == 0
    assert json.loads(report.read_text())["num_images"] == 24
    assert one_line_error(capsys, "evaluate", checkpoint, *data, "--max-images", "0") == "spgkit evaluate: error: --max-images must be at least 1, not 0"


# ---------------------------------------------------------------------------------------- 5


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--image-size", "0"], "--image-size must be between 2 and 4,096, not 0 ("),
        (["--image-size", "1"], "--image-size must be between 2 and 4,096, not 1 ("),
        (["--image-size", "-4"], "--image-size must be between 2 and 4,096, not -4 ("),
        (["--thresholds", "100000000000"], "--thresholds must be between 1 and 10,000, not 100000000000 (more only costs"),
        (["--thresholds", "0"], "--thresholds must be between 1 and 10,000, not 0 ("),
        (["--thresholds", "-3"], "--thresholds must be between 1 and 10,000, not -3 ("),
        (["--thresholds", "1e11"], "argument --thresholds: invalid int value: '1e11'"),
        (["--batch-size", "0"], "--batch-size must be at least 1, not 0"),
        (["--cam-threshold", "1.5"], "--cam-threshold must be a number in [0, 1]"),
        (["--cam-threshold", "nan"], "--cam-threshold must be a number in [0, 1]"),
        (["--data-arg", "image_size=1e13"], "--data-arg image_size: expected a whole number, got 10000000000000.0"),
        (["--data-arg", "image_size=10000000000000"], "--data-arg image_size must be between 2 and 4,096, not 10000000000000"),
        (["--data-arg", "clutter=NaN"], "--data-arg clutter: nan is not a finite number"),
    ],
)
def test_numeric_arguments_are_checked_in_one_line(tmp_path, capsys, argv, expected):
    maps = tmp_path / "maps.npz"
    np.savez(maps, **{f"synthwsol/test/{i}": np.ones((3, 3)) for i in range(12)})
    line = one_line_error(capsys, "score", "--maps", maps, *SYNTH, *argv)
    assert line.startswith("spgkit score") and expected in line, line


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("num_classes", 1e11, "num_classes is 100000000000.0, not a whole number from 1 to 1,000,000"),
        ("num_classes", 10**11, "num_classes is 100000000000, not a whole number from 1 to 1,000,000"),
        ("num_classes", 0, "num_classes is 0, not a whole number from 1 to 1,000,000"),
        ("image_size", -3, "image_size is -3, not a whole number from 2 to 4096"),
        ("classifier_width", 10**9, "classifier_width is 1000000000, not a whole number from 1 to 65,536"),
        ("std", [0.5, 0.0, 0.5], "std is [0.5, 0.0, 0.5]: a standard deviation must be positive"),
        ("heads", "spg", "heads is not a list of [name, arguments, weight]"),
    ],
)
def test_a_checkpoint_with_a_nonsense_config_is_refused_naming_the_file(autoload, checkpoint, tmp_path, capsys, field, value, reason):
    state = load_checkpoint(checkpoint)
    state["config"][field] = value
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, state)
    for command in (["evaluate", bad, *SYNTH], ["localize", bad, tmp_path / "none.png", "--out", tmp_path / "o", "--threshold", "0.5"]):
        line = one_line_error(capsys, *command)
        assert line.startswith(f"spgkit {command[0]}: error: {bad}: its config's {reason};"), line


# ---------------------------------------------------------------------------------------- 6


def diverged_run(checkpoint, tmp_path):
    """What a diverged run leaves: its last good checkpoint and a metrics.json that says so."""
    run = tmp_path / "boom" / "seed0"
    run.mkdir(parents=True)
    shutil.copy(checkpoint, run / "checkpoint.pt")
    message = f"tiny/cam/seed0: loss is nan at epoch 2, step 3; stopped. The last good checkpoint ({run / 'checkpoint.pt'}, after epoch 1) is kept."
    (run / "metrics.json").write_text(json.dumps({"study": "tiny", "arm": "cam", "seed": 0, "protocol": "benchmark", "diverged": message}))
    return run / "checkpoint.pt"


def test_a_diverged_runs_checkpoint_is_evaluated_with_a_notice(autoload, checkpoint, tmp_path, capsys):
    boom = diverged_run(checkpoint, tmp_path)
    report = tmp_path / "boom.json"
    code, out, err = run_main(capsys, "evaluate", boom, *SYNTH, "--device", "cpu", "--json", report)
    assert code == 0 and "Traceback" not in err
    (note,) = [line for line in err.splitlines() if line.strip()]
    assert note.startswith(f"spgkit evaluate: note: the run of {boom} diverged after this checkpoint, its last good one")
    assert "loss is nan at epoch 2" in note
    metrics = json.loads(report.read_text())
    assert metrics["cam_threshold"] is None and "gt_known_loc" not in metrics and "maxboxaccv2" in metrics
    assert run_main(capsys, "evaluate", boom, *SYNTH, "--device", "cpu", "--cam-threshold", "0.4", "--json", report)[0] == 0
    assert json.loads(report.read_text())["cam_threshold"] == 0.4
    # localize needs a threshold for its box, and the diverged run chose none.
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    line = one_line_error(capsys, "localize", boom, image, "--out", tmp_path / "loc")
    assert line.endswith(f"{boom}: no CAM threshold was chosen for it (its run diverged after this checkpoint); pass --threshold")
    code, _, err = run_main(capsys, "localize", boom, image, "--out", tmp_path / "loc", "--threshold", "0.5")
    assert code == 0 and "diverged after this checkpoint" in err


def test_a_run_that_diverged_in_its_first_epoch_has_no_checkpoint_to_use(autoload, tmp_path, capsys):
    run = tmp_path / "boom"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"diverged": "tiny/cam/seed0: loss is nan at epoch 1, step 2; stopped. No checkpoint was written yet."}))
    line = one_line_error(capsys, "evaluate", run / "checkpoint.pt", *SYNTH)
    assert line == (f"spgkit evaluate: error: {run / 'checkpoint.pt'}: no checkpoint: its run diverged before its first epoch "
                    "ended (tiny/cam/seed0: loss is nan at epoch 1, step 2; stopped. No checkpoint was written yet.); there is nothing to use")  # fmt: skip


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("{not json", "not a readable run record ("),
        ('{"arm": "cam", "seed": 0}', "has no cam_threshold (an incomplete run record)"),
        ('{"cam_threshold": "high"}', "has cam_threshold 'high', not a number in [0, 1]"),
    ],
)
def test_a_broken_run_record_is_named(autoload, checkpoint, tmp_path, capsys, record, reason):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoint, run / "checkpoint.pt")
    (run / "metrics.json").write_text(record)
    line = one_line_error(capsys, "evaluate", run / "checkpoint.pt", *SYNTH, "--device", "cpu")
    assert line.startswith(f"spgkit evaluate: error: {run / 'metrics.json'}: {reason}") and line.endswith("pass --cam-threshold, or delete the run and train it again")
    # Given a threshold, the record is not needed.
    assert run_main(capsys, "evaluate", run / "checkpoint.pt", *SYNTH, "--device", "cpu", "--cam-threshold", "0.5")[0] == 0


# ---------------------------------------------------------------------------------------- 7


def test_localize_reads_photos_upright(autoload, checkpoint, tmp_path, capsys):
    """A JPEG stored 64 x 32 with EXIF orientation 6 (turn 90 degrees clockwise to view) is
    32 x 64 on screen: its box is that of the same pixels stored upright."""
    rng = np.random.default_rng(0)
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[4:20, 6:30] = (230, 40, 40)
    pixels[18:30, 40:60] = rng.integers(0, 255, (12, 20, 3))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(rotated, exif=exif, quality=95)
    upright = tmp_path / "upright.png"
    with Image.open(rotated) as stored:
        assert stored.size == (64, 32)
        ImageOps.exif_transpose(stored).save(upright)  # the decoded pixels, turned, losslessly
    out = tmp_path / "loc"
    code, _, err = run_main(capsys, "localize", checkpoint, rotated, upright, "--out", out, "--threshold", "0.9")
    assert code == 0, err
    boxes = json.loads((out / "boxes.json").read_text())
    seen, expected = boxes[str(rotated)], boxes[str(upright)]
    assert seen["box_xyxy"] == expected["box_xyxy"] and seen["class_index"] == expected["class_index"]
    assert seen["image_size"] == expected["image_size"] == [32, 64]
    x0, y0, x1, y1 = seen["box_xyxy"]
    assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 64 and (x1 - x0) * (y1 - y0) < 32 * 64  # a box, not the frame


# ---------------------------------------------------------------------------------------- 8


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, tmp_path, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_score", interrupted)
    code, out, err = run_main(capsys, "score", "--maps", tmp_path, "--data", "synthwsol")
    assert code == 130
    assert err == "spgkit score: interrupted; re-run the same command to resume\n"


@pytest.mark.slow
def test_sigint_stops_a_real_run_with_one_line(tmp_path):
    study = tmp_path / "tiny.py"
    study.write_text(textwrap.dedent(STUDY.format(images=96, epochs=3)))
    env = {**os.environ, "SPGKIT_DISABLE_PLUGIN_AUTOLOAD": "0", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    run = tmp_path / "out" / "tiny" / "cam" / "seed0"
    proc = subprocess.Popen([sys.executable, "-m", "spgkit", "run", str(study), "--out", str(tmp_path / "out"), "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    while not (run / "checkpoint.pt").exists():  # training, past its first epoch
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert not (run / "metrics.json").exists(), "interrupted too late: the run had finished"
    assert proc.returncode == 130
    assert err == "spgkit run: interrupted; re-run the same command to resume\n"


# ---------------------------------------------------------------------------------------- 9


class Boxes(torch.utils.data.Dataset):
    """Blank 32 x 32 images with the given boxes (exclusive corners), eval-transformed."""

    def __init__(self, boxes, size=32):
        self.boxes, self.size, self.transform = boxes, size, eval_transform(size)
        self.num_classes, self.class_names = 1, ["thing"]

    def __len__(self):
        return len(self.boxes)

    def __getitem__(self, k):
        image = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        return self.transform(make_sample(image, 0, np.array([self.boxes[k]], dtype=np.float32), None, None, f"img{k}"))


def test_center_gaussian_is_centred_with_sigma_a_quarter_of_the_side():
    from spgkit.score import center_gaussian

    g = center_gaussian((32, 32))
    assert g.dtype == np.float32 and g.shape == (32, 32)
    assert np.array_equal(g, g[::-1]) and np.array_equal(g, g[:, ::-1]) and np.array_equal(g, g.T)
    # Pixel (15, 8): 0.5 px and 7.5 px from the centre, sigma = 8 px.
    assert g[15, 8] == pytest.approx(np.exp(-((0.5 / 8) ** 2 + (7.5 / 8) ** 2) / 2), rel=1e-6)


def test_the_center_baseline_finds_centred_boxes_and_misses_corner_ones():
    from spgkit.score import center_baseline

    centred = center_baseline(Boxes([(8, 8, 24, 24)] * 3), thresholds=100, protocol="float", cam_threshold=0.5)
    assert centred["num_images"] == 3
    assert centred["maxboxacc"] == centred["maxboxaccv2_iou70"] == centred["gt_known_loc"] == 100
    # By hand (float protocol, no resize at 32 px): the tight box of the pixels >= tau is the
    # centred square of half-side k; its IoU with the 16 px box is >= 0.5 for k = 6..11. The
    # first threshold that reaches it lies above the normalised value of pixel (15, 4), the first
    # outside k = 11: (exp(-d2/2) - min) / (max - min), distances in units of sigma = 8 px.
    value = lambda dy, dx: np.exp(-((dy / 8) ** 2 + (dx / 8) ** 2) / 2)  # noqa: E731
    low, high = value(15.5, 15.5), value(0.5, 0.5)
    edge = (value(0.5, 11.5) - low) / (high - low)  # 0.341...
    assert centred["maxboxacc_threshold"] == pytest.approx(np.ceil(edge * 100) / 100) == pytest.approx(0.35)
    for protocol in ("benchmark", "float"):
        corner = center_baseline(Boxes([(0, 0, 8, 8), (24, 24, 32, 32)]), protocol=protocol, cam_threshold=0.5)
        assert corner["maxboxacc"] == corner["maxboxaccv2"] == corner["gt_known_loc"] == 0
        # Without a CAM threshold no Loc, as score reports it.
        assert "gt_known_loc" not in center_baseline(Boxes([(8, 8, 24, 24)]), protocol=protocol)


def test_score_center_baseline_on_the_command_line(tmp_path, capsys):
    centred = box_dataset(tmp_path, [(8, 8, 24, 24), (6, 6, 26, 26)], name="centred")
    corner = box_dataset(tmp_path, [(0, 0, 8, 8), (24, 0, 32, 8)], name="corner")
    results = {}
    for name, root in (("centred", centred), ("corner", corner)):
        report = tmp_path / f"{name}.json"
        code, _, err = run_main(capsys, "score", "--center-baseline", "--data", "folder_csv", "--root", root,
                                "--image-size", "32", "--json", report)  # fmt: skip
        assert code == 0, err
        results[name] = json.loads(report.read_text())
    assert results["centred"]["maxboxacc"] == 100 and results["corner"]["maxboxacc"] == 0
    assert results["centred"]["maps"].startswith("centre baseline")
    maps = tmp_path / "maps.npz"
    np.savez(maps, **{"0.png": np.ones((3, 3))})
    assert one_line_error(capsys, "score", "--center-baseline", "--maps", maps, "--data", "folder_csv", "--root", centred) == (
        "spgkit score: error: --center-baseline scores a centred Gaussian map of its own: give it no --maps or --logits"
    )
    assert one_line_error(capsys, "score", "--data", "folder_csv", "--root", centred) == (
        "spgkit score: error: --maps is required (or --center-baseline, for the centre baseline)"
    )
