"""Many processes on one study folder, really run at once: each run is trained by one of them, and no
table mixes runs of different configurations."""

import os
import re
import subprocess
import sys

import pytest

from spgkit.io import read_json


def _start(study, out, *args):
    env = {**os.environ, "SPGKIT_DISABLE_PLUGIN_AUTOLOAD": "0", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "spgkit", "run", str(study), "--out", str(out), "--no-progress", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _trained(stdout: str) -> int:
    found = re.search(r"runs: (?:.*?(\d+) trained)?", stdout)
    return int(found.group(1) or 0) if found else 0


@pytest.mark.slow
@pytest.mark.parametrize("arms", [[["cam", "spg"], ["spg", "cam"]], [["cam", "spg"], ["spg", "cam"], ["cam"], ["spg"]]], ids=["2 processes", "4 processes"])
def test_processes_sharing_a_study_folder_train_each_run_once(arms, tiny_study_file, tmp_path):
    study = tiny_study_file(epochs=1)
    processes = [_start(study, tmp_path, "--seeds", "0", "1", "--arms", *names) for names in arms]
    outputs = [p.communicate(timeout=900) for p in processes]
    for p, (stdout, stderr) in zip(processes, outputs):
        assert p.returncode == 0, stderr[-2000:]
    assert sum(_trained(stdout) for stdout, _ in outputs) == 4  # 2 arms x 2 seeds, each trained once
    text = (tmp_path / "tiny" / "results.md").read_text()
    assert "| cam | 2 |" in text and "| spg | 2 |" in text and "Left out" not in text


@pytest.mark.slow
def test_processes_with_different_configurations_never_mix_in_a_table(tiny_study_file, tmp_path):
    study = tiny_study_file(epochs=1)
    one = _start(study, tmp_path)  # cam and spg, 1 epoch
    two = _start(study, tmp_path, "--retrain", "--set", "training.epochs=2", "--arms", "cam")
    results = [p.communicate(timeout=900) for p in (one, two)]
    for p, (stdout, stderr) in zip((one, two), results):
        # A process may find a run of the other configuration in its way: refused in one line.
        assert p.returncode == 0 or (p.returncode == 2 and stderr.count("\n") == 1 and "was trained with another configuration" in stderr), stderr
    assert two.returncode == 0
    text = (tmp_path / "tiny" / "results.md").read_text()
    table = text.split("\n\n")[2]
    shown = [arm for arm in ("cam", "spg") if f"| {arm} |" in table]
    epochs = {read_json(tmp_path / "tiny" / arm / "seed0" / "metrics.json")["record"]["training"]["training"]["epochs"] for arm in shown}
    assert shown and len(epochs) == 1  # every run in the table was made with the same configuration
    for arm in {"cam", "spg"} - set(shown):
        # An arm missing from the table finished with the other configuration and is listed as left
        # out, or never finished: refused on cam first, the 1-epoch process stops before spg.
        if (tmp_path / "tiny" / arm / "seed0" / "metrics.json").exists():
            assert f"- {arm}/seed0: scored with another configuration" in text
