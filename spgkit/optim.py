"""The optimiser and learning-rate schedule of a run, from its study's ``Training``."""

from __future__ import annotations

import torch

from spgkit.config import Study
from spgkit.model import WSOLModel


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
