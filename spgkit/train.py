"""Training and evaluation of one arm for one seed: resumable, atomic, deterministic on the CPU.

Under ``torchrun`` the same code trains with DistributedDataParallel: the global batch is split
over the ranks, evaluation counts are summed across ranks, and only rank 0 writes files.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from spgkit.data import DATASETS, collate, eval_transform, train_transform
from spgkit.io import load_checkpoint, read_json, save_checkpoint, write_json, write_text
from spgkit.localization import LocalizationEvaluator, resize_gt_boxes, score_maps, threshold_grid
from spgkit.model import HeadSpec, WSOLModel, build_model
from spgkit.plugins import Registry

if TYPE_CHECKING:
    from spgkit.study import Arm, Study

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
LOG = "log.csv"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Dist:
    """This process's place in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> "Dist":
        """The process group torchrun describes in the environment (initialised here), or one process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    def sum(self, array: np.ndarray) -> np.ndarray:
        """Element-wise sum of ``array`` over all ranks."""
        if self.world == 1:
            return array
        array = np.asarray(array)
        tensor = torch.tensor(array, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.numpy().astype(array.dtype)


# --------------------------------------------------------------------------- building


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA where there is none is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def model_config(study: Study, arm: Arm, num_classes: int, class_names: list[str]) -> dict[str, Any]:
    """Everything needed to rebuild the model from a checkpoint, in plain types."""
    return {
        "backbone": study.backbone,
        "backbone_args": dict(study.backbone_args),
        "heads": [[h.name, dict(h.args)] for h in arm.heads],
        "num_classes": num_classes,
        "class_names": list(class_names),
        "classifier_width": study.classifier_width,
        "dropout": study.dropout,
        "image_size": study.data.image_size,
    }


def model_from_config(config: dict[str, Any], registry: Registry | None = None) -> WSOLModel:
    """Rebuild a model from :func:`model_config` (weights come from the checkpoint, not the hub)."""
    backbone_args = {k: v for k, v in config["backbone_args"].items() if k not in ("pretrained", "weights")}
    return build_model(
        config["num_classes"],
        [HeadSpec(name, args) for name, args in config["heads"]],
        backbone=config["backbone"],
        backbone_args=backbone_args,
        classifier_width=config["classifier_width"],
        dropout=config["dropout"],
        registry=registry,
    )


def load_model(path: str | Path, registry: Registry | None = None) -> tuple[WSOLModel, dict[str, Any]]:
    """A trained model and its config from a checkpoint written by :func:`train_arm`."""
    state = load_checkpoint(path)
    if "config" not in state or "model" not in state:
        raise ValueError(f"{path}: not an spgkit checkpoint (no model config)")
    model = model_from_config(state["config"], registry)
    model.load_state_dict(state["model"])
    return model.eval(), state["config"]


def open_split(study: Study, split: str, transform) -> Dataset:
    """One split of the study's dataset, its :class:`LocalData` arguments resolved to folders."""
    data = study.data
    if data.name not in DATASETS:
        raise ValueError(f"study {study.name!r}: unknown dataset {data.name!r}; known: {sorted(DATASETS)}")
    from spgkit.study import LocalData

    args = {k: v.resolve() if isinstance(v, LocalData) else v for k, v in data.args.items()}
    return DATASETS[data.name](split=split, transform=transform, **args)


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
        sample = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((_epoch_seed(self.seed, self.epoch) * 1_000_003 + index) % 2**62)
            return self.transform(sample)


def make_datasets(study: Study, train: Dataset, mean, std) -> tuple[Dataset, Dataset, Dataset]:
    """Train (untransformed), selection and test (evaluation transform) sets, given the opened,
    untransformed training split.

    Without a ``select_split`` the selection set is ``holdout`` training images chosen by a fixed
    permutation (the same for every arm and seed), and training uses the rest.
    """
    data = study.data
    eval_tf = eval_transform(data.image_size, mean, std)
    if data.select_split is not None:
        select = open_split(study, data.select_split, eval_tf)
    else:
        if not 0 < data.holdout < len(train):
            raise ValueError(f"study {study.name!r}: select_split is None, so holdout must be in 1..{len(train) - 1}")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
        select = Subset(_Transformed(train, eval_tf), sorted(order[: data.holdout]))
        train = Subset(train, sorted(order[data.holdout :]))
    test = open_split(study, data.test_split, eval_tf)
    return _cap(train, data.max_train), _cap(select, data.max_eval), _cap(test, data.max_eval)


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


def make_scheduler(optimizer: torch.optim.Optimizer, study: Study) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-epoch learning-rate schedule: ``step`` (``gamma`` every ``step_epochs``) or ``cosine``."""
    t = study.training
    if t.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=t.step_epochs, gamma=t.gamma)
    if t.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(t.epochs, 1))
    raise ValueError(f"unknown schedule {t.schedule!r}; use 'step' or 'cosine'")


# --------------------------------------------------------------------------- evaluation


def _to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return batch["images"].to(device, non_blocking=True), batch["labels"].to(device, non_blocking=True)


@torch.no_grad()
def predict_maps(model: WSOLModel, images: torch.Tensor, classes: torch.Tensor | None = None, protocol: str = "benchmark"):
    """Logits and (N, H, W) localization maps in [0, 1] at image resolution for ``classes`` (top-1
    if None), made as the evaluation ``protocol`` defines (:func:`~spgkit.localization.maps.score_maps`).
    Heads that erase (ACoL) erase the region of ``classes``, as the WSOL benchmark does."""
    out = model(images, classes=classes)
    if classes is None:
        classes = out.logits.argmax(1)
    maps = score_maps(model.localization_maps(out, classes).float(), tuple(images.shape[-2:]), protocol)
    return out, maps


@torch.no_grad()
def evaluate(
    model: WSOLModel,
    dataset: Dataset,
    device: torch.device,
    *,
    batch_size: int = 64,
    thresholds: int = 100,
    cam_threshold: float = 0.2,
    protocol: str = "benchmark",
    dist_info: Dist = Dist(),
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, float]:
    """Classification accuracy and every localization metric of ``model`` on ``dataset``.

    The localization map of the ground-truth class is scored (GT-known); Top-1/Top-5 Loc also
    require the class to be right. ``protocol`` (see :data:`~spgkit.localization.maps.PROTOCOLS`)
    sets every definition from the resize of the map to the IoU. Under DDP each rank scores its
    shard and counts are summed.
    """
    model.eval()
    shard = Subset(dataset, range(dist_info.rank, len(dataset), dist_info.world)) if dist_info.world > 1 else dataset
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
    evaluator = LocalizationEvaluator(thresholds=threshold_grid(thresholds), cam_threshold=cam_threshold, protocol=protocol)
    correct = np.zeros(3)  # top-1 hits, top-5 hits, images
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        images, labels = _to_device(batch, device)
        out, maps = predict_maps(model, images, labels, protocol)
        top5 = out.logits.topk(min(5, out.logits.shape[1]), dim=1).indices
        top1_ok = (top5[:, 0] == labels).cpu().numpy()
        top5_ok = (top5 == labels[:, None]).any(1).cpu().numpy()
        size = tuple(images.shape[-2:])
        boxes = [resize_gt_boxes(b, o, size, protocol) for b, o in zip(batch["original_boxes"], batch["original_size"])]
        evaluator.update(
            maps,
            boxes,
            top1_correct=top1_ok,
            top5_correct=top5_ok,
            masks=None if batch["masks"] is None else batch["masks"].numpy(),
            ignore=None if batch["ignore"] is None else batch["ignore"].numpy(),
        )
        correct += (top1_ok.sum(), top5_ok.sum(), len(labels))
    if dist_info.world > 1:
        state = evaluator.state_dict()
        evaluator.load_state_dict({k: dist_info.sum(np.asarray(v)) for k, v in state.items()})
        correct = dist_info.sum(correct)
    metrics = evaluator.compute()
    metrics["top1_acc"] = 100.0 * correct[0] / correct[2]
    metrics["top5_acc"] = 100.0 * correct[1] / correct[2]
    return metrics


# --------------------------------------------------------------------------- training


def _epoch_seed(seed: int, epoch: int) -> int:
    # Each epoch's randomness depends only on (seed, epoch), so a resumed run repeats it exactly.
    return seed * 100_003 + epoch


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buffer.getvalue())


def train_arm(
    study: Study,
    arm: Arm,
    seed: int,
    out_dir: str | Path,
    *,
    registry: Registry | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one arm for one seed into ``out_dir`` and return its final metrics.

    Writes ``checkpoint.pt`` (atomically, every epoch), ``log.csv`` and, when finished,
    ``metrics.json``. A finished run is not repeated; an interrupted one resumes from its last
    checkpoint and ends with the same result as an uninterrupted run (CPU, same seed).
    """
    out_dir = Path(out_dir)
    if (out_dir / METRICS).exists():
        return read_json(out_dir / METRICS)
    for stale in out_dir.glob(".*.tmp"):  # half-written by a killed process; the target is intact
        stale.unlink()
    t = study.training
    device = resolve_device(t.device)
    dist_info = Dist.from_env(device)
    if dist_info.world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)

    torch.manual_seed(seed)
    registry = registry if registry is not None else Registry()
    train_split = open_split(study, study.data.train_split, None)
    num_classes, class_names = train_split.num_classes, list(train_split.class_names)
    config = model_config(study, arm, num_classes, class_names)
    model = build_model(
        num_classes,
        list(arm.heads),
        backbone=study.backbone,
        backbone_args=study.backbone_args,
        classifier_width=study.classifier_width,
        dropout=study.dropout,
        registry=registry,
    )
    config["mean"], config["std"] = list(model.backbone.mean), list(model.backbone.std)
    train_ds, select_ds, test_ds = make_datasets(study, train_split, model.backbone.mean, model.backbone.std)
    augmented = SeededAugmentation(train_ds, train_transform(study.data.image_size, model.backbone.mean, model.backbone.std), seed)
    if t.batch_size % dist_info.world:
        raise ValueError(f"batch size {t.batch_size} is not divisible by the {dist_info.world} processes")
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, study)
    scheduler = make_scheduler(optimizer, study)

    start, history = 0, []
    ckpt_path = out_dir / CHECKPOINT
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, history = state["epoch"] + 1, list(state["history"])
    net = model
    if dist_info.world > 1:
        if device.type == "cuda" and not t.frozen_bn:  # batch statistics over the global batch, as in 1 process
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    # The same sampler for 1 or N processes: N ranks split exactly the 1-process global batches.
    sampler = DistributedSampler(augmented, num_replicas=dist_info.world, rank=dist_info.rank, shuffle=True, seed=seed, drop_last=True)
    loader = DataLoader(
        augmented,
        batch_size=t.batch_size // dist_info.world,
        sampler=sampler,
        collate_fn=collate,
        num_workers=t.num_workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    if len(loader) == 0:
        raise ValueError(f"{len(train_ds)} training images do not fill one batch of {t.batch_size}")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.bf16 and device.type == "cuda")
    eval_kw = dict(
        batch_size=t.batch_size, thresholds=t.thresholds, protocol=t.protocol, dist_info=dist_info,
        num_workers=t.num_workers, progress=progress and dist_info.main,
    )

    select = None  # the selection split's metrics after the last epoch, once computed
    for epoch in range(start, t.epochs):
        sampler.set_epoch(epoch)
        augmented.epoch = epoch
        torch.manual_seed(_epoch_seed(seed, epoch) * dist_info.world + dist_info.rank)
        model.train()
        if t.frozen_bn:
            for module in model.backbone.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        sums: dict[str, torch.Tensor] = {}
        bar = tqdm(loader, desc=f"{arm.name} seed {seed} epoch {epoch + 1}/{t.epochs}", disable=not (progress and dist_info.main), leave=False)
        for step, batch in enumerate(bar, 1):
            images, labels = _to_device(batch, device)
            if t.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast:
                out = net(images, labels)
                terms = model.losses(out, labels)
            total = sum(terms.values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            for key, value in (("loss", total), *terms.items()):
                sums[key] = sums.get(key, 0) + value.detach().float()
            if step % t.log_every == 0 or step == len(loader):
                # One host sync per log interval, not per step.
                running = sums["loss"].item() / step
                if not math.isfinite(running):
                    raise TrainingDiverged(
                        f"{study.name}/{arm.name}/seed{seed}: loss is {running} at epoch {epoch + 1}, "
                        f"step {step}; stopped. " + (f"The last good checkpoint ({ckpt_path}, after epoch {epoch}) is kept." if epoch else "No checkpoint was written yet.")
                    )
                bar.set_postfix(loss=f"{running:.3f}")
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch trained at
        scheduler.step()
        means = dist_info.sum(np.array([v.item() for v in sums.values()])) / (len(loader) * dist_info.world)
        row = {"epoch": epoch + 1, **dict(zip(sums, means)), "lr": lr}
        if t.eval_every and ((epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs):
            select = evaluate(model, select_ds, device, desc="select", **eval_kw)
            row.update({f"val_{k}": select[k] for k in ("top1_acc", "gt_known_loc", "maxboxaccv2") if k in select})
        # Plain floats: checkpoints load with weights_only=True, which refuses numpy scalars.
        history.append({k: v if k == "epoch" else float(v) for k, v in row.items()})
        if dist_info.main:
            save_checkpoint(
                ckpt_path,
                {
                    "config": config,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "history": history,
                    "study": study.name,
                    "arm": arm.name,
                    "seed": seed,
                },
            )
            _write_log(out_dir / LOG, history)

    # The CAM threshold for GT-known/Top-1 Loc is chosen on the selection split, never on test.
    # The last epoch's validation already scored the final model there, unless this run resumed
    # after training had ended or validation is off.
    if select is None:
        select = evaluate(model, select_ds, device, desc="select", **eval_kw)
    chosen = select["maxboxacc_threshold"]
    test = evaluate(model, test_ds, device, cam_threshold=chosen, desc="test", **eval_kw)
    metrics = {
        "study": study.name,
        "arm": arm.name,
        "seed": seed,
        "protocol": t.protocol,
        "cam_threshold": chosen,
        "select_maxboxaccv2": select["maxboxaccv2"],
        **test,
        "train_images": len(train_ds),
        "test_images": len(test_ds),
    }
    if dist_info.main:
        write_json(out_dir / METRICS, metrics)
    return metrics

