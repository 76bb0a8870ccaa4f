"""The ``spgkit`` command, as a user runs it."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from spgkit.cli import main


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "spgkit", *map(str, args)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "SPGKIT_DISABLE_PLUGIN_AUTOLOAD": "0"},
    )


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("run", "heads", "backbones", "evaluate", "score", "localize"):
        assert command in result.stdout
    run_help = " ".join(run_cli("run", "--help").stdout.split())
    for flag in ("--epochs", "--batch-size", "--image-size", "--device", "--out", "--seeds", "--arms", "--set", "--retrain", "--bf16", "--channels-last", "--compile"):
        assert flag in run_help
    # The protocol switch is documented where it is set.
    assert "--protocol {benchmark,float}" in run_help and "sets evaluation.protocol" in run_help
    assert "cv2.INTER_CUBIC" in run_help and "uint8 thresholds" in run_help
    eval_help = " ".join(run_cli("evaluate", "--help").stdout.split())
    assert "--protocol {benchmark,float}" in eval_help and "default: benchmark" in eval_help


def test_device_without_cuda_is_one_line(tiny_study_file, tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("CUDA is here")
    result = run_cli("run", tiny_study_file(), "--out", tmp_path, "--device", "cuda")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("training.device: device 'cuda' asked for, but CUDA is not available here; use --device cpu")


def test_set_from_the_command_line_is_checked(tiny_study_file, tmp_path):
    result = run_cli("run", tiny_study_file(), "--out", tmp_path, "--set", "training.weight_decy=0.1")
    assert result.returncode == 2 and "Training has no field 'weight_decy'" in result.stderr and result.stderr.count("\n") == 1


def test_a_range_the_dataset_reader_refuses_names_the_file_and_field(autoload, tiny_study_file, tmp_path, capsys):
    # check_study checks the reader's argument types; its ranges are the reader's, met when the splits open.
    path = tiny_study_file()
    for command in ("run", "tune"):
        assert main([command, str(path), "--out", str(tmp_path), "--set", "data.args.num_images=-5"]) == 2
        assert capsys.readouterr().err == f"spgkit {command}: error: {path}: data: num_images must be positive, not -5\n"
    assert not any(tmp_path.rglob("*.json"))


def test_heads_and_backbones_name_their_distributions(autoload, capsys):
    assert main(["heads"]) == 0
    out = capsys.readouterr().out
    assert "spg_b" in out and "from spg (spgkit-spg)" in out and "acol" in out and "from acol (spgkit-acol)" in out
    for method in ("has", "adl", "cutmix", "tscam"):
        assert f"\n{method} " in out and f"from {method} (spgkit-{method})" in out
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "inception_v3" in out and "tf_efficientnet_lite0" in out and "spgkit (core)" in out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "synthwsol" in out and "folder_csv" in out and "from spgkit (core datasets)" in out


def test_wrong_study_path_is_one_line_without_traceback():
    result = run_cli("run", "studies/does_not_exist.py")
    assert result.returncode == 2
    assert result.stderr.strip() == "spgkit run: error: studies/does_not_exist.py: no such study file"


def test_unknown_head_in_a_study(autoload, tmp_path, capsys, tiny_study_file):
    path = tiny_study_file()
    path.write_text(path.read_text().replace('"spg_c"', '"spg_x"'))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--arms", "spg", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown head 'spg_x'" in err and "spg_c (from spg (spgkit-spg))" in err
    assert "Traceback" not in err


def test_argparse_errors_exit_nonzero():
    result = run_cli("run", "studies/quickstart.py", "--epochs", "many")
    assert result.returncode == 2 and "invalid int value" in result.stderr and "Traceback" not in result.stderr


def test_run_evaluate_and_localize(trained, tmp_path, capsys):
    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert main(["evaluate", str(trained), "--data", "synthwsol", "--data-arg", "num_images=12", "--data-arg", "image_size=40",
                 "--data-arg", "num_classes=3", "--split", "test", "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert metrics["num_images"] == 12 and 0 <= metrics["maxboxaccv2"] <= 100 and "pxap" in metrics
    images = []
    for i, size in enumerate([(40, 30), (64, 64)]):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", size, (i * 100, 50, 20)).save(path)
        images.append(str(path))
    out = tmp_path / "loc"
    assert main(["localize", str(trained), *images, "--out", str(out)]) == 0
    boxes = json.loads((out / "boxes.json").read_text())
    assert set(boxes) == set(images)
    for path, entry in boxes.items():
        assert entry["class_name"] in ("disc", "triangle", "cross")
        w, h = Image.open(path).size
        x0, y0, x1, y1 = entry["box_xyxy"]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h  # in the original image's pixels
        assert (out / f"{path.rsplit('/', 1)[1][:-4]}_overlay.png").read_bytes()[:4] == b"\x89PNG"


def test_localize_keeps_images_of_the_same_name_apart(trained, tmp_path):
    paths = []
    for folder, colour in (("a", (200, 20, 20)), ("b", (20, 20, 200))):
        path = tmp_path / folder / "photo.png"
        path.parent.mkdir()
        Image.new("RGB", (40, 40), colour).save(path)
        paths.append(str(path))
    out = tmp_path / "loc"
    assert main(["localize", str(trained), *paths, "--out", str(out)]) == 0
    boxes = json.loads((out / "boxes.json").read_text())
    assert [boxes[p]["overlay"] for p in paths] == [str(out / "photo_overlay.png"), str(out / "photo-2_overlay.png")]
    assert (out / "photo_overlay.png").read_bytes() != (out / "photo-2_overlay.png").read_bytes()


def test_localize_rejects_a_non_image(trained, tmp_path, capsys):
    bogus = tmp_path / "notes.png"
    bogus.write_text("not an image")
    assert main(["localize", str(trained), str(bogus), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"spgkit localize: error: {bogus}: cannot decode image")


def test_evaluate_rejects_a_checkpoint_with_other_classes(trained, capsys):
    code = main(["evaluate", str(trained), "--data", "synthwsol", "--data-arg", "num_classes=5", "--data-arg", "num_images=8",
                 "--data-arg", "image_size=40"])
    assert code == 2
    assert "was trained for 3 classes, but synthwsol split 'test' has 5" in capsys.readouterr().err


def test_evaluate_rejects_a_file_that_is_no_checkpoint(autoload, tmp_path, capsys):
    bogus = tmp_path / "checkpoint.pt"
    bogus.write_bytes(b"garbage")
    assert main(["evaluate", str(bogus), "--data", "synthwsol"]) == 2
    assert "not a readable spgkit checkpoint" in capsys.readouterr().err
