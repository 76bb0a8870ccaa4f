import csv
import json
import math

import pytest
import torch

from spgkit import Arm, Data, HeadSpec, Study
from spgkit.model import build_model
from spgkit.runs import StudyFolder
from spgkit.study import StudyError, load_study, override, run_study, select_arms
from spgkit.optim import make_optimizer

REPO_STUDIES = __import__("pathlib").Path(__file__).resolve().parents[2] / "studies"


def test_load_study_errors_name_the_file(tmp_path):
    with pytest.raises(StudyError, match="nope.py: no such study file"):
        load_study(tmp_path / "nope.py")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n\nraise RuntimeError('boom')\n")
    with pytest.raises(StudyError, match=r"bad.py:3: RuntimeError: boom"):
        load_study(bad)
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(StudyError, match="empty.py: defines no module-level STUDY"):
        load_study(empty)


def test_every_shipped_study_loads():
    for path in sorted(REPO_STUDIES.glob("*.py")):
        assert isinstance(load_study(path), Study), path


def test_override_changes_only_the_named_fields():
    study = load_study(REPO_STUDIES / "quickstart.py")
    small = select_arms(override(study, {"training.epochs": 1, "training.batch_size": 4, "data.image_size": 32, "seeds": (3, 4)}), ["cam", "spg"])
    assert small.training.epochs == 1 and small.training.batch_size == 4
    assert small.training.lr == study.training.lr and small.training.device == study.training.device
    assert small.data.image_size == 32 and small.seeds == (3, 4)
    assert [a.name for a in small.arms] == ["cam", "spg"]
    with pytest.raises(StudyError, match=r"no arm\(s\) \['spg_x'\]"):
        select_arms(study, ["spg_x"])


def test_set_any_field_from_text_checked_against_its_type():
    study = load_study(REPO_STUDIES / "quickstart.py")
    changed = override(
        study,
        {
            "training.weight_decay": "5e-4",  # float
            "training.nesterov": "false",  # bool
            "data.select_split": "none",  # str | None
            "seeds": "0,1,2",  # tuple[int, ...]
            "data.args.num_images": "640",  # inside a mapping
            "arms.spg.heads.spg_c.args.width": "32",  # an arm's head, by name
            "arms.spg.heads.spg_b.weight": "0.5",
        },
    )
    assert changed.training.weight_decay == 5e-4 and changed.training.nesterov is False
    assert changed.data.select_split is None and changed.seeds == (0, 1, 2)
    assert changed.data.args["num_images"] == 640 and changed.data.args["image_size"] == study.data.args["image_size"]
    spg = {a.name: a for a in changed.arms}["spg"]
    assert {h.name: dict(h.args) for h in spg.heads}["spg_c"]["width"] == 32
    assert {h.name: h.weight for h in spg.heads}["spg_b"] == 0.5
    assert {a.name: a for a in changed.arms}["spg_tuned"] == {a.name: a for a in study.arms}["spg_tuned"]  # other arms untouched
    assert override(study, {"arms.spg_tuned.training.lr": "0.01"}).arms[-1].training == {"lr": 0.01}  # an arm's own training
    with pytest.raises(StudyError, match="Training has no field 'weight_decy'.*weight_decay"):
        override(study, {"training.weight_decy": "1"})
    with pytest.raises(StudyError, match="--set training.epochs: expected int, not 'many'"):
        override(study, {"training.epochs": "many"})
    with pytest.raises(StudyError, match=r"--set arms: expected tuple of Arm, not \('oops',\)"):  # not "expected tuple"
        override(study, {"arms": "oops"})
    with pytest.raises(StudyError, match="--set training.epochs: Training.epochs must be positive, not -1"):
        override(study, {"training.epochs": "-1"})
    with pytest.raises(StudyError, match=r"--set arms.spgg.name: no 'spgg' here; there are \['cam'"):
        override(study, {"arms.spgg.name": "x"})


def test_declarations_are_checked_when_built():
    from spgkit.config import ConfigError, Training

    with pytest.raises(ConfigError, match=r"arm 'x': heads must be a tuple of HeadSpec, not one HeadSpec; write heads=\(HeadSpec"):
        Arm("x", HeadSpec("spg_b"))
    with pytest.raises(ConfigError, match="Training.epochs must be positive, not -3"):
        Training(epochs=-3)
    with pytest.raises(ConfigError, match="Training.lr must be float, not '0.1'"):
        Training(lr="0.1")
    with pytest.raises(ConfigError, match="Training.schedule must be one of 'step', 'cosine', 'onecycle', not 'linear'"):
        Training(schedule="linear")
    with pytest.raises(ConfigError, match="arm 'x': a head is listed twice"):
        Arm("x", (HeadSpec("spg_b"), HeadSpec("spg_b")))


def test_arm_names_must_be_unique():
    with pytest.raises(ValueError, match="repeat"):
        Study("s", Data("synthwsol"), (Arm("a"), Arm("a")))


def test_new_layers_land_in_the_10x_group(registry):
    study = Study("s", Data("synthwsol"), (Arm("a"),))
    model = build_model(3, [HeadSpec("spg_b"), HeadSpec("spg_c"), HeadSpec("acol")], registry=registry, classifier_width=16)
    opt = make_optimizer(model, study)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["new"]["lr"] == pytest.approx(10 * groups["pretrained"]["lr"])
    new = {id(p) for p in groups["new"]["params"]}
    # Every parameter outside the backbone -- classifier and every head -- trains at 10x.
    for name, p in model.named_parameters():
        assert (id(p) in new) == (not name.startswith("backbone.")), name
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9


def test_adamw_exempts_what_timm_exempts_and_takes_adamws_step(registry):
    from spgkit.config import Training

    training = Training(optimizer="adamw", lr=0.01, new_layer_lr_mult=10, weight_decay=0.5)
    study = Study("s", Data("synthwsol"), (Arm("a"),), training=training)
    vit = {"img_size": 32, "patch_size": 16, "embed_dim": 12, "depth": 2, "num_heads": 2}
    model = build_model(3, [], registry=registry, classifier_width=8, backbone="timm:vit_tiny_patch16_224", backbone_args={"model_args": vit})
    opt = make_optimizer(model, study)
    decay = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    pos = next(p for n, p in named.items() if n.endswith("pos_embed"))
    cls = next(p for n, p in named.items() if n.endswith("cls_token"))
    qkv = next(p for n, p in named.items() if n.endswith("blocks.0.attn.qkv.weight"))
    norm = next(p for n, p in named.items() if n.endswith("blocks.0.norm1.weight"))
    a3 = next(p for n, p in named.items() if n.startswith("classifier.") and p.ndim == 4)
    assert decay[id(pos)] == decay[id(cls)] == decay[id(norm)] == (0.01, 0.0)  # 3-D but named by timm; 1-D
    assert decay[id(qkv)] == (0.01, 0.5) and decay[id(a3)] == (0.1, 0.5)
    assert len(decay) == len(named)  # every parameter in exactly one group
    # One step by hand: the first AdamW step moves each entry by lr * g / (|g| + eps) after
    # shrinking it by (1 - lr * wd): qkv's entries by 1 - 0.005, pos_embed's not at all.
    before = {n: p.detach().clone() for n, p in (("qkv", qkv), ("pos", pos))}
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    opt.step()
    assert torch.allclose(qkv.detach(), before["qkv"] * (1 - 0.01 * 0.5) - 0.01 * 0.25 / (0.25 + 1e-8))
    assert torch.allclose(pos.detach(), before["pos"] - 0.01 * 0.25 / (0.25 + 1e-8))


def test_quickstart_shrunk_end_to_end(tmp_path, registry):
    settings = {"training.epochs": 1, "data.image_size": 32, "training.batch_size": 8, "data.max_train": 16, "data.max_eval": 8, "training.device": "cpu"}
    study = override(load_study(REPO_STUDIES / "quickstart.py"), settings)
    root = run_study(study, tmp_path, registry=registry, progress=False).path
    with open(root / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["arm"] for r in rows] == ["cam", "spg", "spg_tuned"]
    for row in rows:
        for key in ("top1_acc", "gt_known_loc", "top1_loc", "maxboxaccv2", "pxap"):
            value = float(row[key])
            assert math.isfinite(value) and 0 <= value <= 100, (row["arm"], key, value)
    table = (root / "results.md").read_text()
    assert "| spg | 1 |" in table and "MaxBoxAccV2" in table and "PxAP" in table
    for name in ("overlays.png", "curves.png", "heads_spg.png", "heads_spg_tuned.png"):
        data = (root / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    assert not (root / "figures" / "heads_cam.png").exists()  # CAM alone builds no guidance
    metrics = json.loads((root / "spg" / "seed0" / "metrics.json").read_text())
    assert metrics["train_images"] == 16 and metrics["test_images"] == 8
    # The training log follows the guidance: every seed's shares, per epoch.
    with open(root / "spg" / "seed0" / "log.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    for seed in ("spg_b.seed_b2", "spg_b.seed_b1", "spg_c.seed_c"):
        shares = [float(row[f"{seed}_{k}"]) for k in ("object", "background", "ignored")]
        assert math.isclose(sum(shares), 1.0, rel_tol=1e-5) and 0 <= float(row[f"{seed}_score"]) <= 1


def test_max_train_draws_across_classes_not_the_first_images(registry):
    # Real splits are often sorted by class; a cap must not keep the first classes only.
    from spgkit.splits import make_datasets

    class_sorted = [{"label": i // 100} for i in range(400)]  # 4 classes, 100 images each, in order
    study = Study(
        name="cap",
        data=Data("synthwsol", {"num_images": 400, "image_size": 40, "num_classes": 4}, image_size=40,
                  select_split=None, holdout=40, max_train=40, max_eval=20),
        arms=(Arm("cam"),),
    )
    train, select, test = make_datasets(study, registry, class_sorted, (0.5,) * 3, (0.5,) * 3)
    assert (len(train), len(select), len(test)) == (40, 20, 20)
    assert {train[i]["label"] for i in range(len(train))} == {0, 1, 2, 3}
    again, _, _ = make_datasets(study, registry, class_sorted, (0.5,) * 3, (0.5,) * 3)
    assert [again[i]["label"] for i in range(40)] == [train[i]["label"] for i in range(40)]  # same draw every run


def _written(root, study):
    """The metrics.json files a test wrote by hand, as the report's input (no record to check)."""
    from spgkit.io import read_json
    from spgkit.report import Collected

    found = Collected()
    for arm in study.arms:
        for seed in study.seeds:
            path = root / study.name / arm.name / f"seed{seed}" / "metrics.json"
            if path.exists():
                found.metrics.setdefault(arm.name, []).append(read_json(path))
    return found


def test_paired_differences_by_seed_with_hand_numbers(tmp_path):
    from spgkit.io import write_json
    from spgkit.report import write_tables

    study = Study(name="s", data=Data("synthwsol"), arms=(Arm("cam"), Arm("x"), Arm("lonely")), seeds=(0, 1, 2))
    numbers = {"cam": {0: 50.0, 1: 60.0, 2: 55.0}, "x": {0: 53.0, 1: 59.0, 2: 61.0}, "lonely": {}}
    for arm, by_seed in numbers.items():
        for seed, value in by_seed.items():
            write_json(tmp_path / "s" / arm / f"seed{seed}" / "metrics.json", {"seed": seed, "maxboxaccv2": value, "top1_acc": 90.0, "protocol": "benchmark"})
    text = write_tables(study, StudyFolder(tmp_path, study), _written(tmp_path, study))
    # x - cam = +3, -1, +6: mean 2.667, sample std sqrt(((1/3)^2 + (11/3)^2 + (10/3)^2) / 2) = 3.512
    assert "| x | 3 | +0.0 ± 0.0 (0/3) | +2.7 ± 3.5 (2/3) |" in text
    assert "lonely" not in text.split("Difference from cam")[1]
    with open(tmp_path / "s" / "differences.csv") as handle:
        (row,) = csv.DictReader(handle)
    assert row["arm"] == "x" and math.isclose(float(row["maxboxaccv2"]), 8 / 3) and row["maxboxaccv2_ahead"] == "2"
    assert math.isclose(float(row["maxboxaccv2_std"]), 3.5118845842842, rel_tol=1e-9)
    assert "in the `benchmark` protocol" in text


def test_one_seed_shows_no_spread(tmp_path):
    from spgkit.io import write_json
    from spgkit.report import write_tables

    study = Study(name="s", data=Data("synthwsol"), arms=(Arm("cam"), Arm("x")), seeds=(0,))
    for arm, value in (("cam", 50.0), ("x", 52.5)):
        write_json(tmp_path / "s" / arm / "seed0" / "metrics.json", {"seed": 0, "maxboxaccv2": value, "protocol": "float"})
    text = write_tables(study, StudyFolder(tmp_path, study), _written(tmp_path, study))
    assert "| cam | 1 | 50.0 |" in text and "| x | 1 | +2.5 (1/1) |" in text
    assert "±" not in text and "One seed per arm" in text and "in the `float` protocol" in text
    with open(tmp_path / "s" / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["maxboxaccv2"] == "50.0" and "maxboxaccv2_std" not in rows[0] and rows[0]["protocol"] == "float"


def test_onecycle_warms_up_and_anneals_per_step(registry):
    from spgkit.config import Training
    from spgkit.optim import make_scheduler

    study = Study("s", Data("synthwsol"), (Arm("a"),), training=Training(epochs=2, lr=0.01, new_layer_lr_mult=10, schedule="onecycle", warmup=0.25))
    model = build_model(3, [], registry=registry, classifier_width=8, backbone_args={"large_feature_map": True})
    opt = make_optimizer(model, study)
    sched = make_scheduler(opt, study, steps_per_epoch=4)  # 8 steps, 2 of them warm-up
    rates = []
    for _ in range(8):
        rates.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    # OneCycleLR starts at peak / 25, reaches each group's peak at the end of the warm-up (step
    # 0.25 * 8 - 1 = 1), then anneals.
    assert rates[0] == pytest.approx([0.01 / 25, 0.1 / 25])
    assert rates[1] == pytest.approx([0.01, 0.1])
    assert rates[7][0] < rates[5][0] < rates[2][0] < rates[1][0]
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)  # momentum is not cycled


def test_reading_is_generated_from_the_numbers(tmp_path):
    from spgkit.io import write_json
    from spgkit.report import write_tables

    study = Study(name="s", data=Data("synthwsol"), arms=(Arm("cam"), Arm("acol"), Arm("spg"), Arm("spg_c")), seeds=(0,))
    numbers = {
        "cam": {"maxboxaccv2": 30.0, "part_maxboxaccv2": 55.0, "object_covered": 35.0, "on_part": 30.0, "top1_acc": 96.0},
        "acol": {"maxboxaccv2": 26.0, "part_maxboxaccv2": 54.0, "object_covered": 47.5, "on_part": 20.0, "top1_acc": 94.0},
        "spg": {"maxboxaccv2": 29.0, "part_maxboxaccv2": 50.0, "object_covered": 40.0, "on_part": 25.0, "top1_acc": 90.0},
        "spg_c": {"maxboxaccv2": 1.0, "part_maxboxaccv2": 0.1, "object_covered": 91.0, "on_part": 2.0, "top1_acc": 23.0},
    }
    for arm, values in numbers.items():
        write_json(tmp_path / "s" / arm / "seed0" / "metrics.json", {"seed": 0, "protocol": "benchmark", **values})
    text = write_tables(study, StudyFolder(tmp_path, study), _written(tmp_path, study))
    assert "cam's map sits on the part: its MaxBoxAccV2 is 55.0 against the part's box and 30.0 against the object's (+25.0)" in text
    assert "acol covers the most of the object: 47.5 %, +12.5 points on cam (ahead on 1 of 1 seeds), at -4.0 MaxBoxAccV2 and -2.0 Top-1." in text
    # A collapsed arm's near-flat map "covers" more of the object than any: said apart, not ranked.
    assert "spg_c lost its classification (23.0 % Top-1, -73.0 on cam): its map, which no longer follows a class, covers 91.0 % of the object (not ranked)" in text
    assert "One seed proves nothing" in text
    # Where the best of the others covers less of the object than the baseline, none is ranked.
    numbers["acol"]["object_covered"] = numbers["spg"]["object_covered"] = 30.0
    for arm in ("acol", "spg"):
        write_json(tmp_path / "s" / arm / "seed0" / "metrics.json", {"seed": 0, "protocol": "benchmark", **numbers[arm]})
    text = write_tables(study, StudyFolder(tmp_path, study), _written(tmp_path, study))
    assert "No arm covers more of the object than cam." in text and "covers the most" not in text
    # With a second seed for every arm but one, the caveat speaks of that arm alone.
    study = Study(name="s", data=Data("synthwsol"), arms=study.arms, seeds=(0, 1))
    for arm in ("cam", "acol", "spg"):
        write_json(tmp_path / "s" / arm / "seed1" / "metrics.json", {"seed": 1, "protocol": "benchmark", **numbers[arm]})
    text = write_tables(study, StudyFolder(tmp_path, study), _written(tmp_path, study))
    assert "One seed proves nothing" not in text and "ahead on most of its seeds" in text
    assert "spg_c: one seed, which proves nothing." in text


def test_snapshots_record_the_guidance_without_changing_the_run(tiny_study_file, registry, tmp_path):
    study = select_arms(load_study(tiny_study_file(images=24, epochs=2)), ["spg"])  # 3 steps an epoch
    plain = run_study(study, tmp_path / "plain", registry=registry, progress=False)
    shot = run_study(override(study, {"training.snapshot_every": 2}), tmp_path / "shot", registry=registry, progress=False)
    run, other = plain.run("spg", 0), shot.run("spg", 0)
    assert run.metrics.read_bytes() == other.metrics.read_bytes()  # the same numbers, byte for byte
    assert not run.snapshots.exists()
    recorded = other.read_snapshots()
    # Before the first step, every 2 steps, and after the last (6).
    assert [s["step"] for s in recorded["shots"]] == [0, 2, 4, 6]
    first = recorded["shots"][0]
    assert first["CAM"].shape == (2, 40, 40) and first["spg_b: seed b1"].dtype == torch.uint8
    assert {"spg_b: seed b2", "spg_b: b1", "spg_c: seed c"} <= set(first)
    figure = (shot.figures / "evolution_spg.png").read_bytes()
    assert figure[:8] == b"\x89PNG\r\n\x1a\n" and len(figure) > 10000
