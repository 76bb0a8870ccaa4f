"""Training of one arm for one seed: resumable, atomic, deterministic on the CPU.

:func:`train_arm` runs named steps: :func:`setup` (model, data, optimiser, resumed state),
:func:`train_epoch` (of :func:`train_step` s), :func:`checkpoint`, and :func:`select_and_test`
(the CAM threshold chosen on the selection split, the test split scored at it). Under ``torchrun``
the same code trains with DistributedDataParallel: the global batch is split over the ranks,
evaluation counts are summed across ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from spgkit.config import Arm, LocalData, Study, arm_training
from spgkit.data import collate, eval_transform, resolve_local, train_transform
from spgkit.distributed import Dist
from spgkit.evaluate import evaluate, figure_arrays, to_device
from spgkit.guidance import class_maps, minmax_normalize, upsample
from spgkit.model import WSOLModel, build_model
from spgkit.plugins import Registry
from spgkit.record import data_fingerprint, source_fingerprint, versions
from spgkit.runs import RunFolder, model_config, run_config, scored_with


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA where there is none is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
    return device


# --------------------------------------------------------------------------- data


def open_split(study: Study, split: str, transform, registry: Registry) -> Dataset:
    """One split of the study's dataset, its :class:`~spgkit.config.LocalData` arguments resolved
    to folders."""
    args = {k: resolve_local(v) if isinstance(v, LocalData) else v for k, v in study.data.args.items()}
    return registry.dataset(study.data.name)(split=split, transform=transform, **args)


def study_facts(study: Study, registry: Registry, arms: Sequence[Arm] | None = None) -> dict[str, Any]:
    """What every run of ``study`` (of its ``arms``, by default all) records beyond its
    declaration (:func:`~spgkit.runs.run_config`): the source fingerprint of the dataset reader,
    the backbone and every head, the fingerprint of each split it reads, and the library versions
    (:mod:`spgkit.record`)."""
    used = {f"dataset {study.data.name}": registry.dataset(study.data.name), f"backbone {study.backbone}": registry.backbone(study.backbone)}
    used |= {f"head {h.name}": registry.head(h.name) for arm in (study.arms if arms is None else arms) for h in arm.heads}
    roles = {"train": study.data.train_split, "select": study.data.select_split, "test": study.data.test_split}
    splits = {role: data_fingerprint(open_split(study, split, None, registry)) for role, split in roles.items() if split is not None}
    return {"sources": {key: source_fingerprint(obj) for key, obj in used.items()}, "splits": splits, "environment": versions()}


def _cap(ds: Dataset, limit: int) -> Dataset:
    """At most ``limit`` images, drawn by a fixed permutation: splits are often sorted by class,
    so the first ``limit`` would leave most classes out."""
    if not 0 < limit < len(ds):
        return ds
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:limit]
    return Subset(ds, sorted(order.tolist()))


class _Transformed(Dataset):
    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.transform(self.dataset[index])


class SeededAugmentation(Dataset):
    """Apply random training transforms seeded by (seed, epoch, index).

    An image gets the same crop and flip whatever the number of processes or loader workers, so
    a DDP run sees exactly the batches of the 1-process run, and a resumed run repeats its epoch.
    """

    def __init__(self, dataset: Dataset, transform, seed: int):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        # Training reads the image and its label only; masks and boxes carried through the resize
        # and crop doubled the transform's cost. The random draws depend on the image alone.
        sample = self.dataset[index]
        sample = {"image": sample["image"], "label": sample["label"]}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((_epoch_seed(self.seed, self.epoch) * 1_000_003 + index) % 2**62)
            return self.transform(sample)


def make_datasets(study: Study, registry: Registry, train: Dataset, mean, std) -> tuple[Dataset, Dataset, Dataset]:
    """Train (untransformed), selection and test (evaluation transform) sets, given the opened,
    untransformed training split.

    The selection set is ``select_per_class`` images of each class (:func:`per_class`) or
    ``max_eval`` images of ``select_split``; without a ``select_split`` it is carved out of the
    training split (``select_per_class`` of each class, or ``holdout`` images by a fixed
    permutation; the same for every arm and seed), and training uses the rest.
    """
    data = study.data
    eval_tf = eval_transform(data.image_size, mean, std, data.resize)
    if data.select_split is not None:
        select = open_split(study, data.select_split, eval_tf, registry)
        if data.select_per_class:
            select = Subset(select, per_class(select, data.select_per_class, data.select_split))
    else:
        if data.select_per_class:
            held = per_class(train, data.select_per_class, data.train_split)
        elif 0 < data.holdout < len(train):
            held = sorted(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: data.holdout].tolist())
        else:
            raise ValueError(f"study {study.name!r}: select_split is None, so data.holdout must be in 1..{len(train) - 1} (or set data.select_per_class)")
        kept = sorted(set(range(len(train))) - set(held))
        select, train = Subset(_Transformed(train, eval_tf), held), Subset(train, kept)
    if not data.select_per_class:
        select = _cap(select, data.max_eval)
    return _cap(train, data.max_train), select, open_test(study, eval_tf, registry)


def split_labels(ds: Dataset) -> list[int]:
    """Every image's label, read from the split's records (or its ``labels``), not its pixels."""
    records = getattr(ds, "records", None)
    labels = [r.label for r in records] if records is not None else getattr(ds, "labels", None)
    if labels is None:
        raise ValueError(f"{type(ds).__name__} does not say its labels without reading every image, which select_per_class needs")
    return list(labels)


def per_class(ds: Dataset, n: int, split: str) -> list[int]:
    """The indices of ``n`` images of every class of ``ds``, in the order of a fixed permutation
    (the same images every time), sorted; ValueError naming the classes with fewer."""
    labels = split_labels(ds)
    taken: dict[int, list[int]] = {label: [] for label in labels}
    for i in torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).tolist():
        if len(taken[labels[i]]) < n:
            taken[labels[i]].append(i)
    short = sorted(label for label, got in taken.items() if len(got) < n)
    if short:
        raise ValueError(f"data.select_per_class={n}, but split {split!r} has fewer images of class(es) {short[:10]}")
    return sorted(i for got in taken.values() for i in got)


def open_test(study: Study, transform, registry: Registry) -> Dataset:
    """The test set every run of ``study`` is scored on (``max_eval`` images of the test split at
    most), in the order of each run's ``per_image.npz``."""
    return _cap(open_split(study, study.data.test_split, transform, registry), study.data.max_eval)


def make_optimizer(model: WSOLModel, study: Study) -> torch.optim.Optimizer:
    """SGD (Nesterov) with the backbone at ``lr`` and every new layer at ``lr * new_layer_lr_mult``."""
    t = study.training
    groups = model.parameter_groups()
    return torch.optim.SGD(
        [
            {"params": groups["pretrained"], "lr": t.lr, "name": "pretrained"},
            {"params": groups["new"], "lr": t.lr * t.new_layer_lr_mult, "name": "new"},
        ],
        lr=t.lr,
        momentum=t.momentum,
        nesterov=t.nesterov,
        weight_decay=t.weight_decay,
    )


#: Schedules that step after every batch rather than every epoch.
PER_STEP = ("onecycle",)


def make_scheduler(optimizer: torch.optim.Optimizer, study: Study, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule: per epoch ``step`` (``gamma`` every ``step_epochs``) or ``cosine``;
    per step ``onecycle`` (a warm-up over ``warmup`` of the steps to each group's rate, then cosine
    annealing; momentum stays as declared)."""
    t = study.training
    if t.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=t.step_epochs, gamma=t.gamma)
    if t.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(t.epochs, 1))
    if t.schedule == "onecycle":
        peaks = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peaks, total_steps=t.epochs * steps_per_epoch, pct_start=t.warmup, cycle_momentum=False
        )
    raise ValueError(f"unknown schedule {t.schedule!r}")  # Training checks it when declared


# --------------------------------------------------------------------------- the steps


def _epoch_seed(seed: int, epoch: int) -> int:
    # Each epoch's randomness depends only on (seed, epoch), so a resumed run repeats it exactly.
    return seed * 100_003 + epoch


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
    t = study.training
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
    if t.batch_size % dist_info.world:
        raise ValueError(f"batch size {t.batch_size} is not divisible by the {dist_info.world} processes")
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    # The same sampler for 1 or N processes: N ranks split exactly the 1-process global batches.
    sampler = DistributedSampler(augmented, num_replicas=dist_info.world, rank=dist_info.rank, shuffle=True, seed=seed, drop_last=True)
    loader = DataLoader(
        augmented, batch_size=t.batch_size // dist_info.world, sampler=sampler, collate_fn=collate,
        num_workers=t.num_workers, drop_last=True, pin_memory=device.type == "cuda",
    )  # fmt: skip
    if len(loader) == 0:
        raise ValueError(f"{len(train_ds)} training images do not fill one batch of {t.batch_size}")
    optimizer = make_optimizer(model, study)
    scheduler = make_scheduler(optimizer, study, len(loader))
    start, history = 0, []
    if run.checkpoint.exists():
        state = run.load_checkpoint(arm.name, seed)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, history = state["epoch"] + 1, list(state["history"])
    snapshot_batch, snapshots = None, []
    if t.snapshot_every and dist_info.main:
        fixed = _Transformed(train_ds, eval_transform(study.data.image_size, mean, std, study.data.resize))
        snapshot_batch = collate([fixed[i] for i in range(min(SNAPSHOT_IMAGES, len(fixed)))])
        snapshots = run.read_snapshots()["shots"] if start and run.snapshots.exists() else []
    net = model
    if dist_info.world > 1:
        if device.type == "cuda" and not t.frozen_bn:  # batch statistics over the global batch, as in 1 process
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        net = torch.compile(net)
    return Session(
        study, arm, seed, run, device, dist_info, model, net, optimizer, scheduler, augmented, sampler, loader,
        select_ds, test_ds, config, start, history, progress, snapshot_batch, snapshots,
    )  # fmt: skip


def train_epoch(s: Session, epoch: int) -> dict[str, float]:
    """Train one epoch; the epoch's mean of every loss term (over all ranks) and its learning rate."""
    t = s.study.training
    s.sampler.set_epoch(epoch)
    s.augmented.epoch = epoch
    torch.manual_seed(_epoch_seed(s.seed, epoch) * s.dist.world + s.dist.rank)
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
            running = sums["loss"].item() / step  # one host sync per log interval, not per step
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
    """Write the checkpoint and the log, atomically (rank 0 only)."""
    if not s.dist.main:
        return
    state = {
        "config": s.config, "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(), "epoch": epoch, "history": s.history,
        "study": s.study.name, "arm": s.arm.name, "seed": s.seed,
    }  # fmt: skip
    s.run.save_checkpoint(state)
    s.run.write_log(s.history)
    if s.snapshots:
        s.run.write_snapshots({"images": s.snapshot_batch["images"], "labels": s.snapshot_batch["labels"], "shots": s.snapshots})


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
        "study": s.study.name, "arm": s.arm.name, "seed": s.seed, "protocol": s.study.evaluation.protocol,
        "cam_threshold": chosen, "select_maxboxaccv2": select["maxboxaccv2"],
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
    registry = registry if registry is not None else Registry()
    facts = facts if facts is not None else study_facts(study, registry, [arm])
    study = arm_training(study, arm)
    config = run_config(study, arm, seed, facts)
    dist_info, device = Dist.from_env(resolve_device(study.training.device))
    with run.lock(wait) if dist_info.main else contextlib.nullcontext():
        # Rank 0 alone reads and writes the folder; the others follow its decision (or its error).
        try:
            todo = run.prepare(config, retrain) if dist_info.main else None
        except ValueError as exc:  # RunConflict, RunFileError: the run cannot go on as asked
            todo = exc
        todo = dist_info.share(todo)
        if isinstance(todo, Exception):
            raise todo
        run.action = todo
        if todo == "done":
            return run.read_metrics()
        s = setup(study, arm, seed, run, registry, device, dist_info, progress)
        select, t = None, study.training
        try:
            for epoch in range(s.start, t.epochs):
                row = train_epoch(s, epoch)
                if t.eval_every and ((epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs):
                    select = s.evaluate(s.select_ds, "select")
                    row.update({f"val_{k}": select[k] for k in ("top1_acc", "gt_known_loc", "maxboxaccv2") if k in select})
                # Plain floats: checkpoints load with weights_only=True, which refuses numpy scalars.
                s.history.append({k: v if k == "epoch" else float(v) for k, v in row.items()})
                checkpoint(s, epoch)
        except TrainingDiverged as exc:
            # Recorded, so that a re-run of this configuration reports it instead of training again.
            if dist_info.main:
                run.write_metrics(
                    {"study": study.name, "arm": arm.name, "seed": seed, "protocol": study.evaluation.protocol, "diverged": str(exc), "record": scored_with(config)}
                )
            raise
        metrics, images = select_and_test(s, select)
        metrics["record"] = scored_with(config)
        if dist_info.main:
            # metrics.json last: it marks the run finished, so a kill in between evaluates again.
            run.write_per_image(images, metrics["record"])
            run.write_metrics(metrics)
    return metrics
