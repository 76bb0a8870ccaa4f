"""spgkit tune: Search declarations, the few-shot selection split, the plan (seeded, stored in
Optuna's real journal storage), and whole searches through the local executor, killed and resumed."""

import dataclasses
import csv
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import torch

import spgkit
from spgkit.config import Arm, ConfigError, Data, HeadSpec, Param, Search, Study, Training
from spgkit.data import SynthWSOL
from spgkit.heads import GuidanceHead, HeadOutput
from spgkit.plugins import Registry
from spgkit.runs import StudyFolder
from spgkit.study import load_study, override
from spgkit.splits import make_datasets, per_class, split_labels
from spgkit.tune import TuneError, check_space, default_space, open_storage, plan_arm, space, suggest, tune, with_values


class Centre(GuidanceHead):
    """A map known by construction: a centred blob (SynthWSOL's objects sit near the centre), or
    with ``invert`` its complement, which is high on the background. The fused map is the max of
    the CAM's and this one, so ``invert=True`` must score worse on the selection split."""

    name = "centre"

    def __init__(self, spec, *, invert: bool = False):
        super().__init__(spec)
        self.invert = invert

    def forward(self, ctx):
        n, _, h, w = ctx.features["high"].shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        blob = torch.exp(-(xs**2 + ys**2) / 0.3)
        blob = 1 - blob if self.invert else blob
        return HeadOutput(map=blob.expand(n, 1, h, w).clone())


class CentrePlugin:
    @spgkit.hookimpl
    def spgkit_register_heads(self, register):
        register(Centre)


@pytest.fixture
def centre_registry(plugin_manager):
    plugin_manager.register(CentrePlugin(), name="centre (test)")
    return Registry(plugin_manager)


def tiny(tiny_study_file, **search) -> Study:
    return dataclasses.replace(load_study(tiny_study_file(epochs=1)), search=Search(**search))


# --------------------------------------------------------------------------- declarations


def test_a_search_refuses_what_it_cannot_draw():
    with pytest.raises(ConfigError, match="low < high"):
        Param("training.lr", "log", 1.0, 0.1)
    with pytest.raises(ConfigError, match="positive"):
        Param("training.lr", "log", 0.0, 0.1)
    with pytest.raises(ConfigError, match="choices"):
        Param("heads.has.args.grid_size", "choice", 1, 2)
    with pytest.raises(ConfigError, match="whole bounds"):
        Param("heads.has.args.grid_size", "int", 1.5, 4)
    with pytest.raises(ConfigError, match="not inside an arm"):
        Search(spaces={"cam": (Param("data.image_size", "int", 32, 64),)})
    with pytest.raises(ConfigError, match="searched twice"):
        Search(spaces={"cam": (Param("training.lr", "log", 1e-3, 1.0),) * 2})
    data = Data("synthwsol", image_size=32)
    with pytest.raises(ConfigError, match=r"names no arm\(s\) \['spg'\]"):
        Study("s", data, (Arm("cam"),), search=Search(spaces={"spg": (Param("training.lr", "log", 1e-3, 1.0),)}))
    with pytest.raises(ConfigError, match=r"training has no field\(s\) \['device'\]"):
        Arm("cam", training={"device": "cpu"})
    with pytest.raises(ConfigError, match="Training.lr must be positive"):
        Arm("cam", training={"lr": -1.0})


def test_values_land_in_the_arm_and_a_pair_keeps_high_above_low():
    arm = Arm("spg", (HeadSpec("spg_b", {"width": 8}), HeadSpec("spg_c")), training={"epochs": 2})
    tuned = with_values(arm, {"training.lr": 0.05, "heads.spg_b.args.b2_thresholds": (0.6, 0.2)}, {"epochs": 1, "batch_size": 4})
    assert tuned.training == {"epochs": 1, "batch_size": 4, "lr": 0.05}
    assert tuned.heads[0].args == {"width": 8, "b2_thresholds": (0.6, 0.2)} and tuned.heads[1].args == {}
    with pytest.raises(TuneError, match="names no training field or argument of its heads"):
        with_values(arm, {"heads.acol.args.delta": 0.5})
    study = optuna.create_study()
    pair = Param("heads.spg_b.args.b2_thresholds", "pair", 0.2, 0.9)
    for _ in range(50):
        high, low = suggest(study.ask(), (pair,))[pair.path]
        assert 0.2 <= low <= high <= 0.9


def test_the_default_space_is_the_learning_rate_and_each_heads_own(registry):
    arm = Arm("spg", (HeadSpec("spg_b"), HeadSpec("spg_c")))
    assert [p.path for p in default_space(arm, registry)] == [
        "training.lr", "heads.spg_b.args.b2_thresholds", "heads.spg_b.args.b1_thresholds", "heads.spg_c.args.thresholds",
    ]  # fmt: skip
    assert all(p.source for p in default_space(arm, registry))
    assert [p.path for p in default_space(Arm("cam"), registry)] == ["training.lr"]


def test_declared_params_replace_the_default_ones_by_path(registry):
    narrow = Param("training.lr", "log", 1e-4, 0.1)
    fixed = Param("heads.spg_c.args.thresholds", "choice", choices=((0.7, 0.1),))
    extra = Param("training.weight_decay", "log", 1e-5, 1e-3)
    data = Data("synthwsol", image_size=40)
    arms = (Arm("cam"), Arm("spg", (HeadSpec("spg_b"), HeadSpec("spg_c"))))
    study = Study("s", data, arms, search=Search(common=(narrow,), spaces={"spg": (fixed, extra)}))
    assert space(study, arms[0], registry) == (narrow,)
    spg = space(study, arms[1], registry)
    assert [p.path for p in spg] == [p.path for p in default_space(arms[1], registry)] + ["training.weight_decay"]
    assert spg[0] == narrow and spg[3] == fixed and spg[4] == extra


def test_a_space_the_arm_cannot_take_is_refused_before_anything_trains(tiny_study_file, registry):
    study = tiny(tiny_study_file)
    arm = study.arms[1]
    with pytest.raises(TuneError, match=r"arm 'spg' at its lower end: .*thresholds"):
        check_space(study, arm, (Param("heads.spg_c.args.thresholds", "pair", -0.5, 0.5),), registry)


# --------------------------------------------------------------------------- the selection split


def test_select_per_class_draws_n_of_each_class_the_same_every_time():
    synth = SynthWSOL(split="train", num_images=30, image_size=40, num_classes=3)
    assert split_labels(synth)[:7] == [0, 1, 2, 0, 1, 2, 0]
    picked = per_class(synth, 4, "train")
    assert picked == per_class(synth, 4, "train")
    assert sorted(split_labels(synth)[i] for i in picked) == [0] * 4 + [1] * 4 + [2] * 4
    with pytest.raises(ValueError, match=r"select_per_class=11, but split 'train' has fewer images of class\(es\) \[0, 1, 2\]"):
        per_class(synth, 11, "train")


def test_select_per_class_is_held_out_of_training_or_drawn_from_its_split(registry):
    data = Data("synthwsol", {"num_images": 30, "image_size": 40, "num_classes": 3}, image_size=40, select_split=None, select_per_class=2)
    study = Study("s", data, (Arm("cam"),))
    train = SynthWSOL(split="train", num_images=30, image_size=40, num_classes=3)
    kept, select, _ = make_datasets(study, registry, train, (0.5,) * 3, (0.5,) * 3)
    assert len(select) == 6 and len(kept) == 24 and not set(select.indices) & set(kept.indices)
    assert sorted(i % 3 for i in select.indices) == [0, 0, 1, 1, 2, 2]
    study = Study("s", dataclasses.replace(data, select_split="val", max_eval=3), (Arm("cam"),))
    kept, select, _ = make_datasets(study, registry, train, (0.5,) * 3, (0.5,) * 3)
    assert len(kept) == 30 and len(select) == 6  # max_eval caps the test split, never the per-class draw
    with pytest.raises(ConfigError, match="holdout and select_per_class"):
        dataclasses.replace(data, holdout=5)


# --------------------------------------------------------------------------- the plan


def _plan(study, tmp_path, name, registry, storage=None):
    folder = StudyFolder(tmp_path / name, study)
    arm = study.arms[1]
    params = default_space(arm, registry)
    _, trials = plan_arm(open_storage(storage, folder), study, arm, params, "key", folder)
    return [t.values for t in trials]


def test_any_optuna_storage_holds_the_same_plan(tiny_study_file, registry, tmp_path):
    study = tiny(tiny_study_file, trials=3, seed=3)
    journal = _plan(study, tmp_path, "journal", registry)
    assert (tmp_path / "journal" / "tiny" / "trials.journal").exists()
    assert _plan(study, tmp_path, "elsewhere", registry, str(tmp_path / "store.journal")) == journal
    url = f"sqlite:///{tmp_path / 'trials.db'}"
    assert _plan(study, tmp_path, "sqlite", registry, url) == journal
    assert _plan(study, tmp_path, "sqlite", registry, url) == journal  # read back, not drawn again
    assert len(optuna.load_study(study_name="tiny/spg/key", storage=url).trials) == 3


def test_the_same_seed_plans_the_same_configurations_and_another_seed_others(tiny_study_file, registry, tmp_path):
    first = _plan(tiny(tiny_study_file, trials=4, seed=3), tmp_path, "a", registry)
    assert first == _plan(tiny(tiny_study_file, trials=4, seed=3), tmp_path, "b", registry)
    assert len({v["training.lr"] for v in first}) == 4
    assert _plan(tiny(tiny_study_file, trials=4, seed=4), tmp_path, "c", registry) != first
    # more trials extend the plan; the first four stay
    assert _plan(tiny(tiny_study_file, trials=6, seed=3), tmp_path, "a", registry)[:4] == first


def test_a_plan_cut_short_by_a_kill_is_drawn_again_the_same(tiny_study_file, registry, tmp_path):
    study = tiny(tiny_study_file, trials=3, seed=3)
    whole = _plan(study, tmp_path, "whole", registry)
    folder = StudyFolder(tmp_path / "cut", study)
    ostudy = optuna.create_study(study_name=f"{study.name}/spg/key", storage=open_storage(None, folder), direction="maximize")
    cut = ostudy.ask()  # killed after its first draw: stored running, with a draw missing
    cut.set_user_attr("plan", 0)
    cut.suggest_float("training.lr", 1e-5, 1.0, log=True)
    assert _plan(study, tmp_path, "cut", registry) == whole
    states = [t.state.name for t in ostudy.get_trials()]
    assert states == ["FAIL", "RUNNING", "RUNNING", "RUNNING"]


# --------------------------------------------------------------------------- whole searches


def _rows(folder):
    with open(folder / "trials.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_search_finds_the_best_region_known_by_construction_and_diverged_trials_fail(tiny_study_file, centre_registry, tmp_path):
    study = override(tiny(tiny_study_file, trials=4, seed=0), {"data.image_size": 96, "data.args.image_size": 96})  # 11 x 11 maps
    arm = Arm("centre", (HeadSpec("centre"),))
    spaces = {
        "cam": (Param("training.lr", "choice", choices=(0.01, 1e30)),),
        "centre": (Param("training.lr", "choice", choices=(1e-4,)), Param("heads.centre.args.invert", "choice", choices=(False, True))),
    }
    study = dataclasses.replace(study, arms=(study.arms[0], arm), search=dataclasses.replace(study.search, spaces=spaces))
    with pytest.warns(UserWarning, match=r"tiny-search/cam/seed0: loss is nan"):
        result = tune(study, tmp_path / "out", registry=centre_registry, progress=False)
    centre = result.trials["centre"]
    assert {t.values["heads.centre.args.invert"] for t in centre} == {False, True}  # both drawn
    kept = [t.value for t in centre if not t.values["heads.centre.args.invert"]]
    inverted = [t.value for t in centre if t.values["heads.centre.args.invert"]]
    assert min(kept) > max(inverted) + 10  # the selection PxAP, by construction
    assert result.chosen["centre"].values == {"training.lr": 1e-4, "heads.centre.args.invert": False}
    cam = result.trials["cam"]
    assert {t.state for t in cam if t.values["training.lr"] == 1e30} == {"FAIL"}  # a failure, not a zero
    assert all(t.diverged and t.value is None for t in cam if t.state == "FAIL")
    assert result.chosen["cam"].values == {"training.lr": 0.01}
    rows = _rows(result.folder.path)
    assert [(r["arm"], r["state"]) for r in rows if r["objective"] == ""] == [("cam", "FAIL")] * sum(t.state == "FAIL" for t in cam)
    md = result.tuned.results_md.read_text()
    assert "**Tuned, 4 trials per arm**" in md and "- centre: training.lr=0.0001, heads.centre.args.invert=False (trial" in md
    assert "- cam: training.lr=0.01 (trial" in md and "diverged" in md
    assert (result.folder.figures / "trials.png").stat().st_size > 10_000
    tuned_runs = sorted(p.parent.parent.name for p in result.tuned.path.glob("*/seed0/metrics.json"))
    assert tuned_runs == ["cam", "centre"]


TUNE = """
import sys
from spgkit.study import load_study, override
from spgkit.tune import tune
study = load_study(sys.argv[1])
import dataclasses
from spgkit.config import Search
study = dataclasses.replace(study, search=Search(trials=3, seed=5))
tune(study, sys.argv[2], progress=False)
"""


@pytest.mark.slow
def test_a_killed_search_resumes_to_the_same_end(tiny_study_file, tmp_path, autoload):
    path = tiny_study_file(epochs=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = tmp_path / "tune.py"
    script.write_text(TUNE)
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, str(script), str(path), str(whole)], check=True, env=env)
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(script), str(path), str(killed)], env=env)
    target = killed / "tiny-search" / "spg" / "trial001" / "checkpoint.pt"
    deadline = time.time() + 300
    while not target.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert target.exists(), "the search ended before it could be killed mid-way"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "tiny-tuned").exists()
    subprocess.run([sys.executable, str(script), str(path), str(killed)], check=True, env=env)
    assert _rows(killed / "tiny-search") == _rows(whole / "tiny-search")
    assert (killed / "tiny-tuned" / "results.csv").read_bytes() == (whole / "tiny-tuned" / "results.csv").read_bytes()


def test_the_command_refuses_bad_input_in_one_line(tiny_study_file, tmp_path, autoload, capsys):
    from spgkit.cli import main

    path = tiny_study_file(epochs=1)
    assert main(["tune", str(path), "--trials", "0", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "spgkit tune: error: --trials must be in 1..100000, not 0"
    text = path.read_text().replace("    figure_images=3,", "    figure_images=3,\n    search=Search(spaces={'spg': (Param('heads.spg_b.args.nothing', 'uniform', 0.0, 1.0),)}),")
    path.write_text("from spgkit import Param, Search\n" + text)
    assert main(["tune", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "search space of arm 'spg' at its lower end" in err and "nothing" in err
    assert not (tmp_path / "tiny-search").exists()  # refused before anything was stored or trained


@pytest.mark.slow
def test_a_changed_search_in_the_same_folder_is_refused_before_it_trains(tiny_study_file, tmp_path, autoload, capsys):
    from spgkit.cli import main

    path, out = tiny_study_file(epochs=1), tmp_path / "out"
    assert main(["tune", str(path), "--arms", "cam", "--trials", "1", "--out", str(out), "--no-progress"]) == 0
    search = out / "tiny-search"
    reports = {name: (search / name).read_bytes() for name in ("trials.csv", "search.md")}
    capsys.readouterr()
    # Another seed draws another learning rate into the same trial folder: refused in one line,
    # and the first search's report stays (it used to be rewritten with the new plan as RUNNING).
    assert main(["tune", str(path), "--arms", "cam", "--trials", "1", "--out", str(out), "--no-progress", "--set", "search.seed=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cam/trial000 was trained with another configuration (arm.training.lr: " in err
    assert {name: (search / name).read_bytes() for name in reports} == reports

