"""A study fanned out on a real Ray cluster started here: a head and two single-CPU worker nodes
(Ray's own cluster utilities). The runs spread over the nodes, a worker killed mid-run is retried
and resumes to the numbers of an uninterrupted run, and local and Ray give the same bytes."""

import os
import threading
import time

import pytest
import torch

from spgkit.executors import ExecutorError, LocalExecutor, RayExecutor
from spgkit.study import load_study, override, run_study, select_arms

ray = pytest.importorskip("ray", reason="the ray extra (pip install -e '.[ray]'); CI installs it")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow

MEMORY = 80 * 2**20  # a small object store: runs pass only their declarations


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    saved = os.environ.get("SPGKIT_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["SPGKIT_DISABLE_PLUGIN_AUTOLOAD"] = "0"  # workers find the installed plugins, as users' do
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": MEMORY})
    for _ in range(2):
        cluster.add_node(num_cpus=1, object_store_memory=MEMORY)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()
    os.environ["SPGKIT_DISABLE_PLUGIN_AUTOLOAD"] = saved or "1"


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray run (one CPU): the same arithmetic, the same bytes
    yield
    torch.set_num_threads(threads)


def test_runs_spread_over_the_nodes_and_give_the_local_bytes(cluster, one_thread, tiny_study_file, registry, tmp_path):
    study = override(load_study(tiny_study_file(epochs=1)), {"seeds": (0, 1)})
    local = run_study(study, tmp_path / "local", registry=registry, progress=False, executor=LocalExecutor())
    on_ray = run_study(study, tmp_path / "ray", registry=registry, progress=False, executor=RayExecutor(address=cluster.address))
    assert on_ray.actions == {"train": 4}
    assert len(on_ray.nodes) == 4 and len(set(on_ray.nodes.values())) == 2  # both worker nodes trained runs
    assert on_ray.results_csv.read_bytes() == local.results_csv.read_bytes()
    for arm in study.arms:
        assert on_ray.run(arm.name, 0).per_image.read_bytes() == local.run(arm.name, 0).per_image.read_bytes()
    # Again: every run reused, nothing trained.
    assert run_study(study, tmp_path / "ray", registry=registry, progress=False, executor=RayExecutor(address=cluster.address)).actions == {"done": 4}


def test_a_study_whose_head_lives_in_a_file_beside_it_runs_on_the_workers(cluster, one_thread, study_with_head_file, tmp_path):
    # The workers have no such head installed: each registers the study's file itself.
    study = load_study(study_with_head_file())
    local = run_study(study, tmp_path / "local", progress=False, executor=LocalExecutor())
    on_ray = run_study(study, tmp_path / "ray", progress=False, executor=RayExecutor(address=cluster.address))
    assert on_ray.actions == {"train": 2} and len(on_ray.nodes) == 2
    assert on_ray.results_csv.read_bytes() == local.results_csv.read_bytes()
    assert on_ray.run("objectness", 0).per_image.read_bytes() == local.run("objectness", 0).per_image.read_bytes()


def _worker_running_a_run():
    for process in psutil.process_iter(["cmdline"]):
        if any("_ray_task" in part for part in process.info["cmdline"] or []):
            return process
    return None


def test_a_killed_worker_is_retried_and_resumes_to_the_same_numbers(cluster, one_thread, tiny_study_file, registry, tmp_path):
    study = select_arms(load_study(tiny_study_file(images=48, epochs=3)), ["cam"])
    reference = run_study(study, tmp_path / "local", registry=registry, progress=False).run("cam", 0)
    folder = {}

    def drive():
        folder["out"] = run_study(study, tmp_path / "ray", registry=registry, progress=False, executor=RayExecutor(address=cluster.address))

    driver = threading.Thread(target=drive)
    driver.start()
    run = tmp_path / "ray" / "tiny" / "cam" / "seed0"
    deadline = time.monotonic() + 300
    while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:  # epoch 1 checkpointed (its log row is written first)
        time.sleep(0.05)
    worker = _worker_running_a_run()
    assert worker is not None and (run / "checkpoint.pt").exists()
    epochs_before = len((run / "log.csv").read_text().splitlines()) - 1
    worker.kill()
    driver.join(timeout=600)
    assert "out" in folder and folder["out"].actions == {"train": 1}
    assert epochs_before < 3  # killed mid-run
    retried = folder["out"].run("cam", 0)
    assert retried.metrics.read_bytes() == reference.metrics.read_bytes()
    assert retried.per_image.read_bytes() == reference.per_image.read_bytes()


def test_a_run_failing_for_its_own_reason_is_reported_not_retried(cluster, tiny_study_file, registry, tmp_path):
    study = select_arms(load_study(tiny_study_file(epochs=1)), ["cam"])
    run = tmp_path / "tiny" / "cam" / "seed0"
    run_study(study, tmp_path, registry=registry, progress=False)
    (run / "metrics.json").unlink()  # resumes from its checkpoint...
    (run / "checkpoint.pt").write_bytes(b"damaged")  # ...which cannot be read
    with pytest.raises(ExecutorError, match=r"1 of 1 runs failed: .*cam/seed0: .*checkpoint.pt: not a readable spgkit checkpoint"):
        run_study(study, tmp_path, registry=registry, progress=False, executor=RayExecutor(address=cluster.address, max_retries=5))


def test_ctrl_c_on_the_driver_cancels_the_tasks_and_every_run_resumes(cluster, tiny_study_file, tmp_path):
    import signal
    import subprocess
    import sys

    study = tiny_study_file(images=48, epochs=3)
    env = {**os.environ, "SPGKIT_DISABLE_PLUGIN_AUTOLOAD": "0"}
    command = [sys.executable, "-m", "spgkit", "run", str(study), "--out", str(tmp_path), "--no-progress", "--arms", "cam",
               "--executor", "ray", "--address", cluster.address]  # fmt: skip
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "tiny" / "cam" / "seed0"
    deadline = time.monotonic() + 300
    while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:  # epoch 1 checkpointed (its log row is written first)
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130 and stderr.strip().splitlines()[-1] == "spgkit run: interrupted; re-run the same command to resume"
    deadline = time.monotonic() + 60
    while _worker_running_a_run() is not None and time.monotonic() < deadline:  # cancelled, not left running
        time.sleep(0.2)
    assert _worker_running_a_run() is None and not (run / "metrics.json").exists()
    # The same command again resumes the run from its checkpoint and finishes it.
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "1 trained" in again.stdout and (run / "metrics.json").exists()
