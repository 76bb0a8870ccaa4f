"""How layers start: as in the reference codes (the SPG/ACoL authors' and the WSOL benchmark's)."""

from __future__ import annotations

from torch import nn


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every convolution in ``module``, and weight 1,
    bias 0 for every batch norm: how both reference codes start every layer they add (and their
    whole model, before pretrained weights are loaded)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
