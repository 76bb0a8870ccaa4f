"""A study with a head in one file next to it (``Study.plugins``): it runs, its runs record the
file's fingerprint, and an edit of the file is refused as an edited plugin distribution is."""

import hashlib
import json

from spgkit.cli import main


def fingerprint(path) -> str:
    """record.py's hash of a one-file module, worked out by hand: its name and its bytes."""
    return hashlib.sha256(path.name.encode() + b"\0" + path.read_bytes() + b"\0").hexdigest()[:16]


def recorded(out, arm: str) -> dict:
    return json.loads((out / "local" / arm / "seed0" / "config.json").read_text())["training"]["sources"]


def test_a_study_with_its_head_in_a_file_beside_it(study_with_head_file, tmp_path, monkeypatch, capsys):
    head = study_with_head_file().with_name("objectness.py")
    monkeypatch.chdir(tmp_path)  # the study names its head relative to its own folder, not to here
    run = ["run", "study/local.py", "--out", "out", "--no-progress"]
    assert main(run) == 0
    assert "runs: 2 trained" in capsys.readouterr().out
    out = tmp_path / "out"
    assert recorded(out, "objectness")["head objectness"] == fingerprint(head)
    assert "head objectness" not in recorded(out, "cam")

    assert main(run) == 0  # unchanged: reused
    assert "runs: 2 reused" in capsys.readouterr().out

    old = fingerprint(head)
    head.write_text(head.read_text() + "# a comment counts, as in a plugin distribution\n")
    assert main(run) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"local/objectness/seed0 was trained with another configuration (sources.head objectness: '{old}' -> '{fingerprint(head)}')" in err
    assert main([*run, "--arms", "cam"]) == 0  # the CAM run does not use the head: still valid
    assert "runs: 1 reused" in capsys.readouterr().out
    assert main([*run, "--arms", "objectness", "--retrain"]) == 0
    assert "runs: 1 trained" in capsys.readouterr().out
    assert recorded(out, "objectness")["head objectness"] == fingerprint(head)

    # Other commands that build a registry take the file with -p: a checkpoint of its head is rebuilt.
    evaluate = ["evaluate", "out/local/objectness/seed0/checkpoint.pt", "--data", "synthwsol", "--data-arg", "num_images=24",
                "--data-arg", "image_size=40", "--data-arg", "num_classes=3", "--max-images", "4", "--device", "cpu"]  # fmt: skip
    assert main(evaluate) == 2
    assert "unknown head 'objectness'" in capsys.readouterr().err
    assert main([*evaluate, "-p", "study/objectness.py"]) == 0
    assert "gt_known_loc" in capsys.readouterr().out


def test_a_missing_head_file_of_a_study_is_named_from_the_study_folder(study_with_head_file, tmp_path, monkeypatch, capsys):
    study_with_head_file(head=False)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "study/local.py", "--out", "out"]) == 2
    assert capsys.readouterr().err == "spgkit run: error: study/objectness.py: no such plugin file\n"
