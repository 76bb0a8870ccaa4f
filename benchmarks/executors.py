"""A study's (or with ``--command tune``, a search's) wall time in one process (``--executor local``) and on a local Ray instance with
single-thread workers (``--executor ray --cpus-per-run 1``), side by side in one run, and Ray's
start-up overhead (``ray.init`` to a finished trivial task, then ``ray.shutdown``).

Each study runs as ``spgkit run`` in a fresh output folder, alternating local and Ray ``--repeats``
times so that load on the machine hits both alike; the script prints each wall time, the
medians and their ratio, and checks that both made byte-identical ``results.csv`` files when
each run used one thread (``--local-threads 1``; torch's default on this machine differs). On a
2-core CPU, the synth study cut to a quarter of its images and two seeds (10 runs of 75 steps)::

    python benchmarks/executors.py studies/synth.py --set data.args.num_images=1200 --seeds 0 1

and a search of two arms of the methods study, two trials each, the chosen ones trained once::

    python benchmarks/executors.py studies/methods.py --command tune --arms cam acol --trials 2 --seeds 0
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(command_name: str, study: str, extra: list[str], out: Path, executor: list[str], threads: int | None) -> float:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "spgkit", command_name, study, "--out", str(out), "--no-progress", *executor, *extra]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return elapsed


def ray_overhead(cpus: int) -> float:
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.get(ray.remote(lambda: 0).remote())
    ray.shutdown()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study")
    parser.add_argument("--command", choices=("run", "tune"), default="run", help="time spgkit run (default) or spgkit tune")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="CPUs of the Ray instance timed for its overhead (the study's uses all)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--local-threads", type=int, help="OMP_NUM_THREADS of the local run (default: torch's own)")
    args, extra = parser.parse_known_args()
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, flags, threads in (("local", [], args.local_threads), ("ray", ["--executor", "ray", "--cpus-per-run", "1"], None)):
                out = Path(tmp) / f"{name}{repeat}"
                walls[name].append(run(args.command, args.study, extra, out, flags, threads))
                print(f"{name:>5} #{repeat + 1}: {walls[name][-1]:7.1f} s", flush=True)
        csvs = {name: sorted((Path(tmp) / f"{name}0").glob("*/results.csv"))[-1].read_bytes() for name in walls}
    overhead = [ray_overhead(args.workers) for _ in range(3)]
    local, ray = statistics.median(walls["local"]), statistics.median(walls["ray"])
    print(f"median wall time: local {local:.1f} s, ray ({args.workers} single-thread workers) {ray:.1f} s, local / ray = {local / ray:.2f}x")
    print(f"ray start-up and shut-down, median of 3: {statistics.median(overhead):.1f} s")
    print(f"results.csv identical: {csvs['local'] == csvs['ray']}")


if __name__ == "__main__":
    main()
