"""Per-image results: every run saves what each test image scored, every box metric follows from
that file exactly, and the report builds bootstrap intervals and figures from it."""

import csv

import numpy as np
import pytest

from spgkit import Arm, Data, Study
from spgkit.data import eval_transform
from spgkit.evaluate import unshard
from spgkit.io import write_arrays, write_json
from spgkit.localization import box_iou, resize_gt_boxes
from spgkit.figures import disagreements, write_figures
from spgkit.report import Collected, box_accuracy, box_hits, collect, paired_intervals, write_tables
from spgkit.runs import StudyFolder, run_config, scored_with
from spgkit.study import load_study, run_study
from spgkit.splits import open_test, study_facts

PNG = b"\x89PNG\r\n\x1a\n"


def _record(largest, best=None, cam=None, levels=(50,), ids=None) -> dict:
    """A hand-made per-image record: (N, T) IoUs of the largest and best boxes, the chosen box's."""
    largest = np.asarray(largest, dtype=float)
    n, t = largest.shape
    return {
        "image_id": np.array(ids or [f"im{i}" for i in range(n)]),
        "largest_iou": largest,
        "best_iou": largest if best is None else np.asarray(best, dtype=float),
        "cam_iou": largest[:, 0] if cam is None else np.asarray(cam, dtype=float),
        "thresholds": np.arange(t) / t,
        "iou_thresholds": np.array(levels, dtype=float),
    }


def test_per_image_file_gives_every_box_metric_exactly(tiny_study_file, registry, tmp_path):
    study = load_study(tiny_study_file(epochs=2))
    folder = run_study(study, tmp_path, registry=registry, progress=False)
    test = open_test(study, eval_transform(study.data.image_size), registry)  # ids, labels and boxes: no normalisation needed
    samples = [test[i] for i in range(len(test))]
    for arm in ("cam", "spg"):
        run = folder.run(arm, 0)
        metrics, record = run.read_metrics(), run.read_per_image()
        n = len(samples)
        assert record["image_id"].tolist() == [s["image_id"] for s in samples]
        assert record["label"].tolist() == [s["label"] for s in samples]
        assert record["largest_iou"].shape == record["best_iou"].shape == (n, 20) and record["largest_iou"].dtype == np.float64
        assert np.array_equal(record["thresholds"], np.arange(0, 1, 1 / 20)) and record["iou_thresholds"].tolist() == [30, 50, 70]
        # The benchmark's arithmetic, recomputed from the file: equal to metrics.json to the bit.
        per_level = [(record["best_iou"] >= d / 100).sum(0) * 100.0 / n for d in (30, 50, 70)]
        assert float(np.mean([a.max() for a in per_level])) == metrics["maxboxaccv2"]
        for delta, accuracy in zip((30, 50, 70), per_level):
            assert accuracy.max() == metrics[f"maxboxaccv2_iou{delta}"]
            assert record["thresholds"][accuracy.argmax()] == metrics[f"maxboxaccv2_iou{delta}_threshold"]
        assert ((record["largest_iou"] >= 0.5).sum(0) * 100.0 / n).max() == metrics["maxboxacc"]
        known = record["cam_iou"] >= 0.5
        assert known.sum() * 100.0 / n == metrics["gt_known_loc"]
        assert (known & record["top1_correct"]).sum() * 100.0 / n == metrics["top1_loc"]
        assert (known & record["top5_correct"]).sum() * 100.0 / n == metrics["top5_loc"]
        assert 100.0 * record["top1_correct"].sum() / n == metrics["top1_acc"]
        # The report's vectorised form gives the same numbers.
        accuracy = box_accuracy(box_hits(record))
        assert accuracy["maxboxaccv2"][0] == metrics["maxboxaccv2"] and accuracy["gt_known_loc"][0] == metrics["gt_known_loc"]
        # The chosen threshold's box is the largest region's there, with the IoU recorded for it.
        chosen = float(record["cam_threshold"])
        assert chosen == metrics["cam_threshold"]
        assert np.array_equal(record["cam_iou"], record["largest_iou"][:, list(record["thresholds"]).index(chosen)])
        for box, iou, sample in zip(record["cam_box"], record["cam_iou"], samples):
            gt = resize_gt_boxes(sample["original_boxes"], sample["original_size"], (40, 40), "benchmark")
            assert box_iou(box[None], gt).max() == iou
    assert 0 < box_accuracy(box_hits(folder.run("spg", 0).read_per_image()))["best"].max()  # not all misses


def test_ranks_per_image_arrays_back_in_dataset_order():
    # Rank 0 of 2 scored images 0, 2, 4; rank 1 images 1, 3.
    parts = [{"image_id": np.array(["a", "c", "e"]), "iou": np.array([0.0, 2.0, 4.0])}, {"image_id": np.array(["bb", "d"]), "iou": np.array([1.0, 3.0])}]
    joined = unshard(parts)
    assert joined["image_id"].tolist() == ["a", "bb", "c", "d", "e"] and joined["iou"].tolist() == [0, 1, 2, 3, 4]


def test_identical_arms_have_a_zero_interval():
    rng = np.random.default_rng(0)
    record = _record(rng.uniform(0, 1, (30, 5)), levels=(30, 50, 70))
    assert paired_intervals([record, record], [record, record]) == {"gt_known_loc": (0.0, 0.0), "maxboxaccv2": (0.0, 0.0)}


def test_interval_of_two_images_by_hand():
    # GT-known: the baseline hits image 0, the arm both. A resample draws image 1 twice, once or
    # never (1/4, 1/2, 1/4): a difference of 100, 50 or 0, so the interval is [0, 100].
    # MaxBoxAccV2 (one threshold level, two thresholds): the baseline hits image 0 at threshold 0
    # and image 1 at threshold 1, the arm both at threshold 0. Its best threshold depends on the
    # resample: (2, 0) and (0, 2) give the baseline 100 (difference 0), (1, 1) gives 50
    # (difference 50), so the interval is [0, 50]. Fixing the baseline's threshold at its
    # full-set best (0) would give [0, 100]: the maximum must be taken anew in each resample.
    baseline = _record([[0.9, 0.0], [0.0, 0.9]], cam=[0.9, 0.0])
    arm = _record([[0.9, 0.0], [0.9, 0.0]], cam=[0.9, 0.9])
    assert paired_intervals([arm], [baseline]) == {"gt_known_loc": (0.0, 100.0), "maxboxaccv2": (0.0, 50.0)}


def test_seeds_are_resampled_too():
    # Every image alike, so drawing images changes nothing; the arm is +100 on seed 0 and +0 on
    # seed 1. Drawing the two seeds with replacement gives 100, 50 or 0 (1/4, 1/2, 1/4).
    hit, miss = _record([[0.9]] * 4), _record([[0.1]] * 4)
    intervals = paired_intervals([hit, miss], [miss, miss])
    assert intervals["gt_known_loc"] == intervals["maxboxaccv2"] == (0.0, 100.0)


def test_an_arm_better_on_every_image_excludes_zero():
    rng = np.random.default_rng(1)
    iou = rng.uniform(0, 0.6, (40, 10))
    low, high = paired_intervals([_record(iou + 0.35, levels=(30, 50, 70))], [_record(iou, levels=(30, 50, 70))])["maxboxaccv2"]
    assert 0 < low < high
    assert paired_intervals([_record(iou + 0.35)], [_record(iou)]) == paired_intervals([_record(iou + 0.35)], [_record(iou)])  # fixed seed


def test_disagreements_largest_gap_first_and_none_where_alike():
    arm, baseline = _record([[0.0]] * 5, cam=[0.5, 0.1, 0.9, 0.3, 0.3]), _record([[0.0]] * 5, cam=[0.5, 0.4, 0.2, 0.3, 0.6])
    assert disagreements(arm, baseline, 2).tolist() == [2, 1]  # gaps 0.7, 0.3 (image 4's 0.3 comes later)
    assert disagreements(arm, baseline, 5).tolist() == [2, 1, 4]


def _asked(study, registry):
    """What a report of ``study`` asks each run to have been scored with."""
    facts = study_facts(study, registry)
    return {(arm.name, seed): scored_with(run_config(study, arm, seed, facts)) for arm in study.arms for seed in study.seeds}


def test_differences_table_shows_the_interval(tmp_path):
    study = Study(name="s", data=Data("synthwsol"), arms=(Arm("cam"), Arm("x")), seeds=(0,))
    records = {"cam": _record([[0.9, 0.0], [0.0, 0.9]], cam=[0.9, 0.0]), "x": _record([[0.9, 0.0], [0.9, 0.0]], cam=[0.9, 0.9])}
    metrics = {arm: [{"seed": 0, "gt_known_loc": value, "maxboxaccv2": value, "protocol": "benchmark"}] for arm, value in (("cam", 50.0), ("x", 100.0))}
    text = write_tables(study, StudyFolder(tmp_path, study), Collected(metrics, {arm: {0: record} for arm, record in records.items()}))
    assert "| Δ GT-known Loc | Δ MaxBoxAccV2 | Δ GT-known Loc [95% CI] | Δ MaxBoxAccV2 [95% CI] |" in text
    assert "| x | 1 | +50.0 (1/1) | +50.0 (1/1) | [+0.0, +100.0] | [+0.0, +50.0] |" in text
    with open(tmp_path / "s" / "differences.csv") as handle:
        (row,) = csv.DictReader(handle)
    assert (row["maxboxaccv2_ci_low"], row["maxboxaccv2_ci_high"], row["gt_known_loc_ci_high"]) == ("0.0", "50.0", "100.0")


def test_old_runs_report_without_the_file_and_are_evaluated_not_retrained(tiny_study_file, registry, tmp_path):
    study = load_study(tiny_study_file(epochs=1))
    folder = run_study(study, tmp_path, registry=registry, progress=False)
    runs = [folder.run(arm.name, 0) for arm in study.arms]
    before = {run: (run.metrics.read_bytes(), run.checkpoint.read_bytes(), run.log.read_bytes()) for run in runs}
    # As a run from before per-image results: the report still works and leaves out what needs them.
    for run in runs:
        run.per_image.unlink()
    folder.clear_reports()
    collected = collect(study, folder, _asked(study, registry))
    text = write_tables(study, folder, collected)
    written = {p.name for p in write_figures(study, folder, collected, registry)}
    assert "CI" not in text and "| spg | 1 |" in text.split("Difference from cam")[1]
    assert "ci_low" not in folder.differences_csv.read_text()
    assert {"overlays.png", "curves.png", "heads_spg.png"} <= written and not any(n.startswith(("threshold", "disagree")) for n in written)
    # A re-run evaluates them again from their checkpoints: same numbers, no training.
    run_study(study, tmp_path, registry=registry, progress=False)
    for run in runs:
        assert run.per_image.exists()
        assert (run.metrics.read_bytes(), run.checkpoint.read_bytes(), run.log.read_bytes()) == before[run]
    assert "Δ MaxBoxAccV2 [95% CI]" in folder.results_md.read_text()


def test_threshold_figure_and_disagreement_gallery(tiny_study_file, registry, tmp_path):
    study = load_study(tiny_study_file(epochs=1))
    folder = run_study(study, tmp_path, registry=registry, progress=False)
    figure = (folder.figures / "threshold.png").read_bytes()
    assert figure[:8] == PNG and len(figure) > 10000
    # One epoch leaves both arms choosing the same boxes; make them differ on two images.
    collected = collect(study, folder, _asked(study, registry))
    collected.images["spg"][0]["cam_iou"][[1, 4]] += (0.5, 0.25)
    written = write_figures(study, folder, collected, registry)
    gallery = folder.figures / "disagree_spg.png"
    assert gallery in written and gallery.read_bytes()[:8] == PNG and len(gallery.read_bytes()) > 10000
    assert not (folder.figures / "disagree_cam.png").exists()  # the baseline is not compared with itself


def test_pairing_refuses_different_test_sets():
    a, b = _record([[0.9]]), _record([[0.9]], ids=["other"])
    with pytest.raises(ValueError, match="different test sets"):
        paired_intervals([a], [b])


def test_figures_are_drawn_from_what_scoring_recorded(tiny_study_file, registry, tmp_path):
    import torch

    from spgkit.data import collate
    from spgkit.evaluate import predict_maps
    from spgkit.localization import score_maps
    from spgkit.runs import load_model

    study = load_study(tiny_study_file(epochs=1))
    folder = run_study(study, tmp_path, registry=registry, progress=False)
    spg = folder.run("spg", 0)
    data = spg.read_figure_data()
    # Every test image's map, in test order, is the one the model gives: resized and normalised,
    # it is the map predict_maps scores, up to the last bits that a convolution's arithmetic
    # changes with the batch's size and the threads; visuals are kept for figure_images (3) only.
    model, config = load_model(spg.checkpoint, registry)
    test = open_test(study, eval_transform(config["image_size"], config["mean"], config["std"], config["resize"]), registry)
    batch = collate([test[i] for i in range(len(test))])
    images = batch["images"]
    _, expected = predict_maps(model, images, batch["labels"])
    assert data["map"].shape[0] == len(test) == 12
    torch.testing.assert_close(score_maps(torch.from_numpy(data["map"]), tuple(images.shape[-2:]), "benchmark"), expected, rtol=0, atol=1e-5)
    assert data["mean"].tolist() == config["mean"] and {v.shape[0] for k, v in data.items() if k.startswith("visual/")} == {3}
    # No model is built to draw: the figures come without a checkpoint.
    for arm in study.arms:
        folder.run(arm.name, 0).checkpoint.rename(tmp_path / f"{arm.name}.pt")
    folder.clear_reports()
    collected = collect(study, folder, _asked(study, registry))
    written = {p.name for p in write_figures(study, folder, collected, registry)}
    assert {"overlays.png", "heads_spg.png", "curves.png", "threshold.png"} <= written
    # A run scored before spgkit kept figures.npz is scored again from its checkpoint, not retrained.
    for arm in study.arms:
        (tmp_path / f"{arm.name}.pt").rename(folder.run(arm.name, 0).checkpoint)
    kept = spg.metrics.read_bytes(), spg.checkpoint.read_bytes()
    spg.figure_data.unlink()
    again = run_study(study, tmp_path, registry=registry, progress=False)
    assert again.actions == {"evaluate": 1, "done": 1}
    assert (spg.metrics.read_bytes(), spg.checkpoint.read_bytes()) == kept and spg.read_figure_data()["record"] == data["record"]
