"""``spgkit score``: maps written by other code give the numbers ``spgkit evaluate`` gives."""

import csv
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from spgkit.cli import main
from spgkit.data import SynthWSOL, collate, eval_transform
from spgkit.io import load_checkpoint, save_checkpoint
from spgkit.runs import load_model

DATA = ["--data", "synthwsol", "--data-arg", "num_images=12", "--data-arg", "image_size=40", "--data-arg", "num_classes=3"]
IDS = [f"synthwsol/test/{i}" for i in range(12)]


def write_model_outputs(checkpoint, folder):
    """What another code base would write: the raw maps of the ground-truth classes at feature
    resolution (before any resize or normalisation), one .npy per image id, and the logits in one
    .npz. Computed as evaluate computes them: one batch of the 12 images, on the CPU."""
    model, config = load_model(checkpoint)
    dataset = SynthWSOL(split="test", num_images=12, image_size=40, num_classes=3,
                        transform=eval_transform(config["image_size"], config["mean"], config["std"], config["resize"]))  # fmt: skip
    (batch,) = DataLoader(dataset, batch_size=64, collate_fn=collate)
    with torch.no_grad():
        out = model(batch["images"], classes=batch["labels"])
        maps = model.localization_maps(out, batch["labels"]).float()
    assert maps.shape[-2:] != (40, 40)  # so that score has to resize them
    for image_id, raw in zip(batch["image_ids"], maps):
        path = folder / "maps" / f"{image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, raw.numpy())
    np.savez(folder / "logits.npz", **dict(zip(batch["image_ids"], out.logits.numpy())))
    return folder / "maps", folder / "logits.npz"


def test_score_gives_the_numbers_of_evaluate(trained, tmp_path, capsys):
    maps, logits = write_model_outputs(trained, tmp_path)
    for protocol in ("benchmark", "float"):
        common = [*DATA, "--protocol", protocol, "--cam-threshold", "0.3"]
        evaluated, scored, gt_known = (tmp_path / f"{name}_{protocol}.json" for name in ("evaluate", "score", "gt_known"))
        assert main(["evaluate", str(trained), *common, "--device", "cpu", "--json", str(evaluated)]) == 0
        table = tmp_path / f"score_{protocol}.csv"
        assert main(["score", "--maps", str(maps), "--logits", str(logits), "--image-size", "40", *common,
                     "--json", str(scored), "--csv", str(table)]) == 0  # fmt: skip
        expected = json.loads(evaluated.read_text())
        # The same float32 maps go through the same resize, normalisation and counting code, so
        # every number is equal, not close; the part metrics of SynthWSOL included.
        assert json.loads(scored.read_text()) == expected
        assert {"top1_loc", "pxap", "part_maxboxaccv2", "maxboxaccv2_iou70"} <= expected.keys()
        (row,) = csv.DictReader(table.open())
        assert row == {key: str(value) for key, value in expected.items()}
        # Without logits: the GT-known metrics alone, still equal.
        assert main(["score", "--maps", str(maps), "--image-size", "40", *common, "--json", str(gt_known)]) == 0
        classified = {"top1_acc", "top5_acc", "top1_loc", "top5_loc"}
        assert json.loads(gt_known.read_text()) == {k: v for k, v in expected.items() if k not in classified}
    out = capsys.readouterr().out
    assert "maxboxaccv2" in out and "protocol: float" in out
    # The two protocols do differ on these maps, so the comparison above tested each one.
    assert json.loads((tmp_path / "score_benchmark.json").read_text()) != json.loads((tmp_path / "score_float.json").read_text())


def save_maps(folder, ids=IDS, shape=(5, 7)):
    rng = np.random.default_rng(0)
    for image_id in ids:
        path = folder / f"{image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.random(shape, dtype=np.float32))
    return folder


def score_error(capsys, *args):
    """The one line ``spgkit score`` prints to stderr, checking that it fails with status 2."""
    assert main(["score", *map(str, args), "--image-size", "40", *DATA]) == 2
    err = capsys.readouterr().err
    line = err.rsplit("\r", 1)[-1]  # after any progress bar, which a terminal overwrites
    assert line.count("\n") == 1 and "Traceback" not in err
    return line.strip()


def test_missing_and_extra_maps_are_named(tmp_path, capsys):
    maps = save_maps(tmp_path / "maps", ids=IDS[1:-1])
    expected = (f"spgkit score: error: {maps}: no array for 2 of the 12 images of synthwsol split 'test': "
                f"'synthwsol/test/0', 'synthwsol/test/11' (expected files {maps}/<image id>.npy)")  # fmt: skip
    assert score_error(capsys, "--maps", maps) == expected
    save_maps(maps, ids=IDS + ["synthwsol/test/12", "stray", "zzz/a", "zzz/b"])
    expected = (f"spgkit score: error: {maps}: 4 array(s) name no image of synthwsol split 'test': "
                "'stray', 'synthwsol/test/12', 'zzz/a', ...")  # fmt: skip
    assert score_error(capsys, "--maps", maps) == expected
    archive = tmp_path / "maps.npz"
    np.savez(archive, **{image_id: np.ones((3, 3)) for image_id in IDS[:5]})
    assert score_error(capsys, "--maps", archive).endswith(
        "no array for 7 of the 12 images of synthwsol split 'test': 'synthwsol/test/5', 'synthwsol/test/6', "
        "'synthwsol/test/7', ... (expected entries named by image id)"
    )


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (np.ones((1, 5, 5), dtype=np.float32), "expected a non-empty 2-D array, got shape (1, 5, 5)"),
        (np.ones(5, dtype=np.float32), "expected a non-empty 2-D array, got shape (5,)"),
        (np.ones((0, 5), dtype=np.float32), "expected a non-empty 2-D array, got shape (0, 5)"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "contains NaN or infinite values"),
        (np.array([["a", "b"], ["c", "d"]]), "expected numbers, got dtype <U1"),
    ],
)
def test_a_bad_map_is_named(tmp_path, capsys, bad, reason):
    maps = save_maps(tmp_path / "maps")
    np.save(maps / "synthwsol/test/4.npy", bad)
    assert score_error(capsys, "--maps", maps) == f"spgkit score: error: {maps}/synthwsol/test/4.npy: {reason}"
    archive = tmp_path / "maps.npz"
    np.savez(archive, **{image_id: bad if image_id == IDS[4] else np.ones((3, 3)) for image_id in IDS})
    assert score_error(capsys, "--maps", archive) == f"spgkit score: error: {archive}['synthwsol/test/4']: {reason}"


def test_logits_of_the_wrong_length_are_named(tmp_path, capsys):
    maps = save_maps(tmp_path / "maps")
    logits = tmp_path / "logits.npz"
    np.savez(logits, **{image_id: np.zeros(4 if image_id == IDS[2] else 3) for image_id in IDS})
    assert score_error(capsys, "--maps", maps, "--logits", logits) == (
        f"spgkit score: error: {logits}['synthwsol/test/2']: 4 class scores, but synthwsol split 'test' has 3 classes"
    )


def test_unreadable_files_are_named(tmp_path, capsys):
    maps = save_maps(tmp_path / "maps")
    (maps / "synthwsol/test/3.npy").write_text("not an array")
    assert score_error(capsys, "--maps", maps).startswith(f"spgkit score: error: {maps}/synthwsol/test/3.npy: not a readable array (")
    archive = tmp_path / "maps.npz"
    archive.write_text("not a zip")
    assert score_error(capsys, "--maps", archive).startswith(f"spgkit score: error: {archive}: not a readable .npz file (")
    other = tmp_path / "maps.txt"
    other.write_text("")
    assert score_error(capsys, "--maps", other) == f"spgkit score: error: {other}: expected a folder of .npy files or an .npz file"
    assert score_error(capsys, "--maps", tmp_path / "missing") == f"spgkit score: error: {tmp_path / 'missing'}: no such file or folder"


def test_maps_of_a_folder_csv_dataset_are_keyed_by_image_path(tmp_path, capsys):
    """A file reader's ids are its image paths, extension included; maps of any size are resized
    to the evaluation size, and so are the boxes: a map that is the box itself localizes it."""
    from PIL import Image

    root = tmp_path / "data"
    boxes = {"birds/a.png": (60, 40, (10, 5, 40, 30)), "birds/b.jpg": (50, 80, (20, 40, 50, 80))}
    rows = ["image,label,x0,y0,x1,y1"]
    for name, (width, height, box) in boxes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (width, height), (90, 120, 30)).save(root / name)
        rows.append(f"{name},bird,{','.join(map(str, box))}")
    (root / "test.csv").write_text("\n".join(rows) + "\n")

    def box_maps(folder, swap=False):
        names = list(boxes)
        for name, source in zip(names, names[::-1] if swap else names):
            width, height, (x0, y0, x1, y1) = boxes[source]
            box_map = np.zeros((height, width), dtype=np.float32)  # at the original image's size
            box_map[y0:y1, x0:x1] = 1
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{name}.npy", box_map)
        return folder

    report = tmp_path / "right.json"
    args = ["--data", "folder_csv", "--root", str(root), "--image-size", "32", "--thresholds", "10", "--cam-threshold", "0.2", "--json", str(report)]
    assert main(["score", "--maps", str(box_maps(tmp_path / "right")), *args]) == 0
    right = json.loads(report.read_text())
    assert right["num_images"] == 2 and right["gt_known_loc"] == right["maxboxacc"] == right["maxboxaccv2_iou70"] == 100
    # The other image's box: the maps do not simply pass whatever they are.
    assert main(["score", "--maps", str(box_maps(tmp_path / "swapped", swap=True)), *args]) == 0
    assert json.loads(report.read_text())["maxboxacc"] == 0
    assert "gt_known_loc: 100.0000" in capsys.readouterr().out


def test_a_checkpoint_keeps_its_resize_and_an_older_one_reads_as_torchvisions(trained, tmp_path):
    assert load_model(trained)[1]["resize"] == "benchmark"
    state = load_checkpoint(trained)
    del state["config"]["resize"]  # as spgkit wrote checkpoints before 2026-12-02
    save_checkpoint(tmp_path / "old.pt", state)
    assert load_model(tmp_path / "old.pt")[1]["resize"] == "torchvision"
