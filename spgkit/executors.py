"""Where a study's runs execute: one after another in this process (:class:`LocalExecutor`, the
default), or as tasks on a Ray cluster (:class:`RayExecutor`: a laptop, a multi-GPU machine, many
nodes, a SLURM allocation). The study runner plans the runs and reports; an executor only trains
them. spgkit schedules nothing itself: Ray places the tasks.

Every run is an independent task: it reads its declaration, holds its folder's lock and writes
only its folder (:func:`~spgkit.train.train_arm`), so executors, processes and machines can share
one study folder on storage they all see.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

from spgkit.config import Arm, Study
from spgkit.plugins import Registry
from spgkit.runs import RunBusy, RunFolder
from spgkit.train import TrainingDiverged, train_arm

#: One planned run: its arm, its seed, its folder.
Planned = tuple[Arm, int, RunFolder]


class ExecutorError(RuntimeError):
    """Runs failed for reasons of their own (bad data, a head's bug, a node lost too often); the
    message names each, one per line folded into one."""


class LocalExecutor:
    """Every run in this process, one after another (today's ``spgkit run``). A run another
    process holds is left for last, then waited for and reused."""

    name = "local"

    def run(self, study: Study, planned: list[Planned], *, registry: Registry, facts: dict[str, Any], progress: bool, retrain: bool) -> None:
        busy: list[Planned] = []
        for wait, todo in ((False, planned), (True, busy)):
            for arm, seed, run in todo:
                try:
                    train_arm(study, arm, seed, run, registry=registry, facts=facts, progress=progress, retrain=retrain, wait=wait)
                except RunBusy:
                    busy.append((arm, seed, run))  # another process trains it: come back for it last
                except TrainingDiverged as exc:  # one diverging run does not cost the others
                    warnings.warn(str(exc), stacklevel=1)
                    run.action = "diverged"


def _ray_task(study: Study, arm: Arm, seed: int, path: str, threads: int, plugins: tuple[str, ...]) -> tuple[str, str]:
    """One run, in a Ray worker: what :func:`~spgkit.train.train_arm` did (``train``,
    ``evaluate``, ``done``) or ``diverged``, and the Ray node it ran on. The worker finds the
    plugins installed where it runs, loads the driver's plugin files (``plugins``, absolute paths:
    on storage every node sees, like the run folders) and fingerprints the code and data it sees
    itself, so its record is its own. A retried task (its worker died) finds the run's checkpoint
    and resumes."""
    import ray
    import torch

    torch.set_num_threads(threads)
    run = RunFolder(path)
    try:
        train_arm(study, arm, seed, run, registry=Registry(plugins=plugins), progress=False, wait=True)
    except TrainingDiverged:
        run.action = "diverged"
    return run.action, ray.get_runtime_context().get_node_id()


@dataclass(frozen=True)
class RayExecutor:
    """Each run a Ray task with its declared resources, on the cluster at ``address``.

    Args:
        address: the cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); None starts a
            local Ray instance for the command and stops it after.
        cpus_per_run: CPU cores each run reserves; torch in the run uses as many threads.
        gpus_per_run: GPUs each run reserves; fractions let small runs share a GPU (``0.25``:
            four to a GPU).
        max_retries: how often a run whose worker died (killed, out of memory, node lost) is
            started again; it resumes from its last checkpoint. A run that fails for a reason of
            its own (bad data, a bug) is not retried.
        num_cpus: cores of the local instance when ``address`` is None (default: all).
    """

    address: str | None = None
    cpus_per_run: float = 1
    gpus_per_run: float = 0
    max_retries: int = 3
    num_cpus: int | None = None

    name = "ray"

    def run(self, study: Study, planned: list[Planned], *, registry: Registry, facts: dict[str, Any], progress: bool, retrain: bool) -> None:
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install 'spgkit[ray]' (or pip install ray)") from None
        if retrain:  # here, once: a retried task must resume, not start over
            for _, _, run in planned:
                with run.lock(wait=True):
                    run.clear()
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, num_cpus=self.num_cpus if self.address is None else None, log_to_driver=False,
                     logging_level="ERROR", include_dashboard=False)  # fmt: skip
        options = {"num_cpus": self.cpus_per_run, "num_gpus": self.gpus_per_run, "max_retries": self.max_retries, "retry_exceptions": False}
        task = ray.remote(**options)(_ray_task)
        threads = max(1, int(self.cpus_per_run))
        pending = {task.remote(study, arm, seed, str(run.path), threads, registry.plugin_files): run for arm, seed, run in planned}
        failed: list[str] = []
        try:
            self._wait(ray, pending, failed, progress, len(planned))
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()
        if failed:
            raise ExecutorError(f"{len(failed)} of {len(planned)} runs failed: " + "; ".join(failed))

    @staticmethod
    def _wait(ray, pending: dict, failed: list[str], progress: bool, total: int) -> None:
        """Collect the tasks as they finish, printing the runs done, pending and failed."""
        done: Counter = Counter()
        begin = time.perf_counter()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(ready[0])
            try:
                run.action, run.node = ray.get(ready[0])
                done[run.action] += 1
            except ray.exceptions.RayTaskError as exc:  # the run's own error: reported, not retried
                cause = exc.cause if exc.cause is not None else exc
                failed.append(f"{run.path}: {type(cause).__name__}: {' '.join(str(cause).split())}")
            except ray.exceptions.RayError as exc:  # its worker or node died more often than max_retries
                failed.append(f"{run.path}: {type(exc).__name__} (worker lost after its retries)")
            if progress:
                finished = ", ".join(f"{n} {action}" for action, n in sorted(done.items()))
                print(f"[ray {time.perf_counter() - begin:.0f} s] runs: {sum(done.values())}/{total} done ({finished}), "
                      f"{len(pending)} pending, {len(failed)} failed", flush=True)  # fmt: skip


def make_executor(name: str, **options: Any) -> LocalExecutor | RayExecutor:
    """The executor called ``name`` (``local`` or ``ray``) with its options; ``local`` takes none."""
    if name == "local":
        given = {k: v for k, v in options.items() if v is not None}
        if given:
            raise ExecutorError(f"--executor local takes no {', '.join('--' + k.replace('_', '-') for k in given)}; use --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(**{k: v for k, v in options.items() if v is not None})
    raise ExecutorError(f"unknown executor {name!r}; use local or ray")


__all__ = ["ExecutorError", "LocalExecutor", "RayExecutor", "make_executor"]
