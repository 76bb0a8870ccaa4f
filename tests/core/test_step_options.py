"""The training step's speed options compute the same step: bf16 autocast to bf16's precision,
torch.compile to float rounding."""

import copy

import pytest
import torch

from spgkit.model import HeadSpec, build_model
from spgkit.train import train_step

HEADS = [HeadSpec("spg_b", {"width": 16}), HeadSpec("spg_c", {"width": 16})]


def _two_steps(net, model, images, labels, autocast=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    return [train_step(net, model, optimizer, images, labels, autocast) for _ in range(2)]


def _setup(registry):
    torch.manual_seed(0)
    # dropout 0: compiled code draws its own dropout masks
    model = build_model(3, HEADS, registry=registry, classifier_width=16, dropout=0.0, backbone_args={"large_feature_map": True})
    return model, torch.randn(2, 3, 80, 80), torch.tensor([0, 2])


def test_bf16_autocast_on_the_cpu_changes_losses_only_at_bf16_precision(registry):
    model, images, labels = _setup(registry)
    other = copy.deepcopy(model)
    plain = _two_steps(model, model, images, labels)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    half = _two_steps(other, other, images, labels, autocast)
    for a, b in zip(plain, half, strict=True):
        assert a["ce"] != b["ce"]  # it did run in bf16
        assert abs(a["ce"] - b["ce"]) < 0.05 * a["ce"]  # bf16 keeps 8 bits: ~0.4 % per rounding


@pytest.mark.slow
def test_compiled_step_gives_the_eager_losses(registry):
    # CAM alone on a small backbone: compiling is slow on a CPU, and seed masks would turn float
    # rounding into flipped pixels and so into loss differences of their own. Batch norm in eval
    # mode: batch statistics over 2 images of 2x2 pixels amplify rounding in the gradients ~1e4x.
    torch.manual_seed(0)
    model = build_model(3, [], "tf_efficientnet_lite0", registry=registry, classifier_width=16, dropout=0.0)
    model.train()
    for module in model.backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    other = copy.deepcopy(model)
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    eager = _two_steps(model, model, images, labels)
    compiled = _two_steps(torch.compile(other), other, images, labels)
    for a, b in zip(eager, compiled, strict=True):
        assert torch.allclose(a["ce"], b["ce"], rtol=1e-4), (a["ce"], b["ce"])
