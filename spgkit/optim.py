"""The optimiser and learning-rate schedule of a run, from its study's ``Training``."""

from __future__ import annotations

import torch

from spgkit.config import Study
from spgkit.model import WSOLModel


def make_optimizer(model: WSOLModel, study: Study) -> torch.optim.Optimizer:
    """``training.optimizer`` with the backbone at ``lr`` and every new layer at ``lr *
    new_layer_lr_mult``: SGD (Nesterov), or AdamW with timm's weight-decay exemptions
    (:func:`undecayed`)."""
    t = study.training
    rates = {"pretrained": t.lr, "new": t.lr * t.new_layer_lr_mult}
    groups = model.parameter_groups()
    if t.optimizer == "sgd":
        named = [{"params": groups[name], "lr": lr, "name": name} for name, lr in rates.items()]
        return torch.optim.SGD(named, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay)
    exempt = undecayed(model)
    named = [
        {"params": [p for p in groups[name] if (id(p) in exempt) == free], "lr": lr, "name": name, "weight_decay": 0.0 if free else t.weight_decay}
        for name, lr in rates.items()
        for free in (False, True)
    ]  # fmt: skip
    return torch.optim.AdamW([g for g in named if g["params"]], lr=t.lr, betas=(0.9, 0.999), eps=1e-8)


def undecayed(model: torch.nn.Module) -> set[int]:
    """The ids of the parameters timm's optimiser factory leaves without weight decay: every
    parameter of at most one dimension (biases, norm scales) and those a module names in its
    ``no_weight_decay()`` (a timm ViT's ``pos_embed`` and ``cls_token``)."""
    exempt = {id(p) for p in model.parameters() if p.ndim <= 1}
    for module in model.modules():
        if callable(getattr(module, "no_weight_decay", None)):
            names = set(module.no_weight_decay())
            exempt |= {id(p) for name, p in module.named_parameters() if name in names}
    return exempt


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
