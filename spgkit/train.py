"""Training of one arm for one seed: resumable, atomic, deterministic on the CPU.

:func:`train_arm` runs named steps: :func:`setup` (model, data, optimiser, resumed state),
:func:`train_epochs` (each a :func:`train_epoch` of :func:`train_step` s, then a :func:`checkpoint`),
and :func:`select_and_test` (the CAM threshold chosen on the selection split, the test split
scored at it). Where the data, optimiser and device come from: :mod:`spgkit.splits`,
:mod:`spgkit.optim`, :mod:`spgkit.distributed`. Under ``torchrun`` the same code trains with
DistributedDataParallel: the global batch is split over the ranks, evaluation counts are summed
across ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from spgkit.config import Arm, Study, arm_training
from spgkit.data import collate, eval_transform, train_transform
from spgkit.distributed import Dist, resolve_device
from spgkit.evaluate import evaluate, figure_arrays, to_device
from spgkit.guidance import class_maps
from spgkit.localization.maps import minmax_normalize, upsample
from spgkit.model import WSOLModel, build_model
from spgkit.optim import PER_STEP, make_optimizer, make_scheduler
from spgkit.plugins import Registry
from spgkit.runs import RunFolder, model_config, run_config, scored_with
from spgkit.splits import SeededAugmentation, Transformed, epoch_seed, make_datasets, open_split, study_facts


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def train_step(
    net, model: WSOLModel, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor, autocast=None, grad_clip: float = 0.0
) -> dict[str, torch.Tensor]:
    """One SGD step on a batch; returns the total ``loss``, every weighted term and the heads'
    statistics, detached.

    ``net`` runs the forward pass (``model`` itself, or its DistributedDataParallel wrapper);
    ``model`` names the loss terms. ``grad_clip`` > 0 clips the gradients' global norm.
    """
    with autocast or contextlib.nullcontext():
        out = net(images, labels)
        terms = model.losses(out, labels)
    total = sum(terms.values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
    optimizer.step()
    return {"loss": total.detach(), **{k: v.detach() for k, v in terms.items()}, **model.stats(out)}


@dataclass
class Session:
    """Everything one run trains with."""

    study: Study
    arm: Arm
    seed: int
    run: RunFolder
    device: torch.device
    dist: Dist
    model: WSOLModel
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    augmented: SeededAugmentation
    sampler: DistributedSampler
    loader: DataLoader
    select_ds: Dataset
    test_ds: Dataset
    config: dict[str, Any]
    start: int
    history: list[dict[str, float]]
    progress: bool
    snapshot_batch: dict | None = None  #: fixed training images, when snapshots are asked for
    snapshots: list[dict[str, Any]] = field(default_factory=list)

    def evaluate(self, dataset: Dataset, desc: str, cam_threshold: float = 0.2, per_image: bool = False):
        """:func:`~spgkit.evaluate.evaluate` with the study's settings."""
        e, t = self.study.evaluation, self.study.training
        return evaluate(
            self.model, dataset, self.device, batch_size=t.batch_size, thresholds=e.thresholds, protocol=e.protocol,
            cam_threshold=cam_threshold, dist_info=self.dist, num_workers=t.num_workers,
            progress=self.progress and self.dist.main, desc=desc, per_image=per_image,
        )  # fmt: skip


def setup(study: Study, arm: Arm, seed: int, run: RunFolder, registry: Registry, device: torch.device, dist_info: Dist, progress: bool) -> Session:
    """Build the model, the data and the optimiser, and load the run's checkpoint if it has one."""
    torch.manual_seed(seed)
    train_split = open_split(study, study.data.train_split, None, registry)
    model = build_model(
        train_split.num_classes, list(arm.heads), backbone=study.backbone, backbone_args=study.backbone_args,
        classifier_width=study.classifier_width, dropout=study.dropout, registry=registry,
    )  # fmt: skip
    mean, std = model.backbone.mean, model.backbone.std
    config = model_config(study, arm, train_split.num_classes, list(train_split.class_names), mean, std)
    train_ds, select_ds, test_ds = make_datasets(study, registry, train_split, mean, std)
    augmented = SeededAugmentation(train_ds, train_transform(study.data.image_size, mean, std, study.data.resize), seed)
    model.to(device)
    if study.training.channels_last:
        model.to(memory_format=torch.channels_last)
    sampler, loader = _loader(study, augmented, seed, device, dist_info)
    optimizer = make_optimizer(model, study)
    scheduler = make_scheduler(optimizer, study, len(loader))
    start, history = _resume(run, arm.name, seed, study.training.epochs, model, optimizer, scheduler)
    snapshot_batch, snapshots = None, []
    if study.training.snapshot_every and dist_info.main:
        fixed = Transformed(train_ds, eval_transform(study.data.image_size, mean, std, study.data.resize))
        snapshot_batch = collate([fixed[i] for i in range(min(SNAPSHOT_IMAGES, len(fixed)))])
        snapshots = run.read_snapshots()["shots"] if start and run.snapshots.exists() else []
    return Session(
        study=study, arm=arm, seed=seed, run=run, device=device, dist=dist_info, model=model,
        net=_forward_net(model, study, device, dist_info), optimizer=optimizer, scheduler=scheduler,
        augmented=augmented, sampler=sampler, loader=loader, select_ds=select_ds, test_ds=test_ds, config=config,
        start=start, history=history, progress=progress, snapshot_batch=snapshot_batch, snapshots=snapshots,
    )  # fmt: skip


def _loader(study: Study, augmented: Dataset, seed: int, device: torch.device, dist_info: Dist) -> tuple[DistributedSampler, DataLoader]:
    # The same sampler for 1 or N processes: N ranks split exactly the 1-process global batches.
    t = study.training
    if t.batch_size % dist_info.world:
        raise ValueError(f"batch size {t.batch_size} is not divisible by the {dist_info.world} processes")
    sampler = DistributedSampler(augmented, num_replicas=dist_info.world, rank=dist_info.rank, shuffle=True, seed=seed, drop_last=True)
    loader = DataLoader(
        augmented, batch_size=t.batch_size // dist_info.world, sampler=sampler, collate_fn=collate,
        num_workers=t.num_workers, drop_last=True, pin_memory=device.type == "cuda",
    )  # fmt: skip
    if len(loader) == 0:
        raise ValueError(f"{len(augmented)} training images do not fill one batch of {t.batch_size}")
    return sampler, loader


def _resume(run: RunFolder, arm: str, seed: int, epochs: int, model: WSOLModel, optimizer, scheduler) -> tuple[int, list[dict[str, float]]]:
    # The first epoch still to train and the log so far: (0, []) for a fresh run.
    if not run.checkpoint.exists():
        return 0, []
    state = run.load_checkpoint(arm, seed, epochs)
    model.load_state_dict(state["model"])
    if "optimizer" in state:  # not in a finished run's checkpoint, which trains no further
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    return state["epoch"] + 1, list(state["history"])


def _forward_net(model: WSOLModel, study: Study, device: torch.device, dist_info: Dist) -> torch.nn.Module:
    # What runs the forward pass: the model, wrapped for DDP over ranks, compiled when asked.
    net = model
    if dist_info.world > 1:
        if device.type == "cuda" and not study.training.frozen_bn:  # batch statistics over the global batch, as in 1 process
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if study.training.compile else net


def train_epoch(s: Session, epoch: int) -> dict[str, float]:
    """Train one epoch; the epoch's mean of every loss term (over all ranks) and its learning rate."""
    t = s.study.training
    s.sampler.set_epoch(epoch)
    s.augmented.epoch = epoch
    torch.manual_seed(epoch_seed(s.seed, epoch) * s.dist.world + s.dist.rank)
    s.model.train()
    if t.frozen_bn:
        _freeze_bn(s.model)
    autocast = torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=t.bf16)
    sums: dict[str, torch.Tensor] = {}
    name = f"{s.arm.name} seed {s.seed} epoch {epoch + 1}/{t.epochs}"
    bar = tqdm(s.loader, desc=name, disable=not (s.progress and s.dist.main), leave=False)
    for step, batch in enumerate(bar, 1):
        if epoch == 0 and step == 1:
            snapshot(s, 0)
        images, labels = to_device(batch, s.device)
        if t.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        for key, value in train_step(s.net, s.model, s.optimizer, images, labels, autocast, t.grad_clip).items():
            sums[key] = sums.get(key, 0) + value.float()
        if t.schedule in PER_STEP:
            s.scheduler.step()
        done = epoch * len(s.loader) + step
        if t.snapshot_every and (done % t.snapshot_every == 0 or done == t.epochs * len(s.loader)):
            snapshot(s, done)
        if step % t.log_every == 0 or step == len(s.loader):
            # One host sync per log interval, not per step; the mean over the ranks, so that a loss
            # gone non-finite on one rank stops every rank (a rank left training waits forever).
            running = float(s.dist.sum(np.array([sums["loss"].item()]))[0]) / (step * s.dist.world)
            if not math.isfinite(running):
                kept = f"The last good checkpoint ({s.run.checkpoint}, after epoch {epoch}) is kept." if epoch else "No checkpoint was written yet."
                raise TrainingDiverged(f"{s.study.name}/{s.arm.name}/seed{s.seed}: loss is {running} at epoch {epoch + 1}, step {step}; stopped. {kept}")
            bar.set_postfix(loss=f"{running:.3f}")
    lr = s.optimizer.param_groups[0]["lr"]  # the rate this epoch trained at (ended at, per step)
    if t.schedule not in PER_STEP:
        s.scheduler.step()
    means = s.dist.sum(np.array([v.item() for v in sums.values()])) / (len(s.loader) * s.dist.world)
    return {"epoch": epoch + 1, **dict(zip(sums, means)), "lr": lr}


#: Fixed training images a snapshot records.
SNAPSHOT_IMAGES = 2


@torch.no_grad()
def snapshot(s: Session, step: int) -> None:
    """Record, after ``step`` steps, the CAM of the true class (normalised, at image size) and
    every head's visuals for the fixed training images. In eval mode, so no dropout draw and no
    batch-norm statistic changes: the run computes the same with snapshots or without."""
    if s.snapshot_batch is None or any(shot["step"] == step for shot in s.snapshots):
        return
    images, labels = to_device(s.snapshot_batch, s.device)
    s.model.eval()
    out = s.model(images, labels)
    cam = minmax_normalize(upsample(class_maps(out.classifier.cams, labels), tuple(images.shape[-2:])))
    shot = {"step": step, "CAM": cam.half().cpu()}
    for name, head_out in out.heads.items():
        for key, value in head_out.visuals.items():
            shot[f"{name}: {key}"] = (value if value.dtype == torch.uint8 else value.half()).cpu()
    s.snapshots.append(shot)
    s.model.train()
    if s.study.training.frozen_bn:
        _freeze_bn(s.model)


def _freeze_bn(model: WSOLModel) -> None:
    for module in model.backbone.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def checkpoint(s: Session, epoch: int) -> None:
    """Write the checkpoint and the log, atomically (rank 0 only). The last epoch's checkpoint
    leaves out the optimiser and scheduler: nothing resumes a finished run (more epochs is another
    configuration), and a search's hundreds of runs keep half the disk (a third with Adam)."""
    if not s.dist.main:
        return
    state = {
        "config": s.config, "model": s.model.state_dict(), "epoch": epoch, "history": s.history,
        "study": s.study.name, "arm": s.arm.name, "seed": s.seed,
    }  # fmt: skip
    if epoch + 1 < s.study.training.epochs:
        state.update(optimizer=s.optimizer.state_dict(), scheduler=s.scheduler.state_dict())
    # The log first: it is whole history, rewritten at every epoch, so a row ahead of the
    # checkpoint is replaced when that epoch trains again; after the checkpoint, a kill between
    # the two would lose the last epoch's row for good (a resume from it trains nothing).
    s.run.write_log(s.history)
    s.run.save_checkpoint(state)
    if s.snapshots:
        s.run.write_snapshots({"images": s.snapshot_batch["images"], "labels": s.snapshot_batch["labels"], "shots": s.snapshots})


def _prepare(run: RunFolder, config: dict[str, Any], retrain: bool, dist_info: Dist) -> str:
    # Rank 0 alone reads and writes the folder; the others follow its decision (or its error).
    try:
        todo = run.prepare(config, retrain) if dist_info.main else None
    except ValueError as exc:  # RunConflict, RunFileError: the run cannot go on as asked
        todo = exc
    todo = dist_info.share(todo)
    if isinstance(todo, Exception):
        raise todo
    return todo


def _identity(s: Session) -> dict[str, Any]:
    # What every metrics.json opens with, finished or diverged.
    return {"study": s.study.name, "arm": s.arm.name, "seed": s.seed, "protocol": s.study.evaluation.protocol}


def train_epochs(s: Session) -> dict[str, float] | None:
    """Train the epochs still to train, each followed by its checkpoint (and by a validation on
    the selection split every ``eval_every`` epochs); the last validation of the final model, if any."""
    select, t = None, s.study.training
    for epoch in range(s.start, t.epochs):
        row = train_epoch(s, epoch)
        if t.eval_every and ((epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs):
            select = s.evaluate(s.select_ds, "select")
            row.update({f"val_{k}": select[k] for k in ("top1_acc", "gt_known_loc", "maxboxaccv2") if k in select})
        # Plain floats: checkpoints load with weights_only=True, which refuses numpy scalars.
        s.history.append({k: v if k == "epoch" else float(v) for k, v in row.items()})
        checkpoint(s, epoch)
    return select


def select_and_test(s: Session, select: dict[str, float] | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Choose the CAM threshold on the selection split (never on test) and score the test split at
    it: the metrics, and what each test image scored (:func:`~spgkit.evaluate.evaluate`'s
    ``images``, with what figures draw under ``figures``: its ``map`` and :func:`~spgkit.evaluate.figure_arrays`).
    ``select`` is the last epoch's validation of the final model, when there was one."""
    if select is None:
        select = s.evaluate(s.select_ds, "select")
    chosen = select["maxboxacc_threshold"]
    test, images = s.evaluate(s.test_ds, "test", cam_threshold=chosen, per_image=True)
    images["figures"] = {"map": images.pop("map"), **figure_arrays(s.model, s.test_ds, s.study.figure_images, s.device)}
    metrics = {
        **_identity(s), "cam_threshold": chosen, "select_maxboxaccv2": select["maxboxaccv2"],
        **({"select_pxap": select["pxap"]} if "pxap" in select else {}), **test,
        "train_images": len(s.augmented), "test_images": len(s.test_ds), "num_classes": s.config["num_classes"],
    }  # fmt: skip
    return metrics, images


def train_arm(
    study: Study, arm: Arm, seed: int, run: RunFolder, *, registry: Registry | None = None, facts: dict[str, Any] | None = None,
    progress: bool = True, retrain: bool = False, wait: bool = True,
) -> dict[str, Any]:
    """Train one arm for one seed into ``run`` and return its final metrics.

    A finished run of the same configuration is reused; one of the same training configuration
    scored otherwise, or finished without ``per_image.npz``, is evaluated again; an interrupted
    one resumes from its last checkpoint and ends with the same result as an uninterrupted run
    (CPU, same seed). A run folder of another
    configuration is refused (:class:`~spgkit.runs.RunConflict`), or emptied with ``retrain``.
    A run whose loss diverges raises :class:`TrainingDiverged` and records it in its metrics
    (``{"diverged": message}``); a re-run of the same configuration returns that record.

    The run's folder is locked while it trains; another process holding it raises
    :class:`~spgkit.runs.RunBusy`, or with ``wait`` is waited for. ``facts`` is
    :func:`study_facts` (computed when not given); ``run.action`` says afterwards what was done:
    ``"train"``, ``"evaluate"`` or ``"done"`` (reused).
    """
    registry = registry if registry is not None else Registry(plugins=study.plugins)
    facts = facts if facts is not None else study_facts(study, registry, [arm])
    study = arm_training(study, arm)
    config = run_config(study, arm, seed, facts)
    dist_info, device = Dist.from_env(resolve_device(study.training.device))
    # Under torchrun the other ranks wait in _prepare for rank 0's decision on this run: rank 0
    # waits for the lock too, since skipping a busy run would put the ranks on different runs.
    with run.lock(wait or dist_info.world > 1) if dist_info.main else contextlib.nullcontext():
        run.action = _prepare(run, config, retrain, dist_info)
        if run.action == "done":
            return run.read_metrics()
        s = setup(study, arm, seed, run, registry, device, dist_info, progress)
        if s.start == study.training.epochs:  # killed after its last checkpoint: scored, not trained
            run.action = "evaluate"
        try:
            select = train_epochs(s)
        except TrainingDiverged as exc:
            # Recorded, so that a re-run of this configuration reports it instead of training again.
            if dist_info.main:
                run.write_metrics({**_identity(s), "diverged": str(exc), "record": scored_with(config)})
            raise
        metrics, images = select_and_test(s, select)
        metrics["record"] = scored_with(config)
        if dist_info.main:
            # metrics.json last: it marks the run finished, so a kill in between evaluates again.
            run.write_per_image(images, metrics["record"])
            run.write_metrics(metrics)
    return metrics
