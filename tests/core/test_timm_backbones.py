"""``timm:<model>`` backbones: any timm CNN, channels-last model or vision transformer gives NCHW
maps by role, trains, and loads weights offline."""

import socket

import huggingface_hub.constants
import pytest
import timm
import torch

from spgkit import Arm, Data, HeadSpec, Study
from spgkit.backbones import default_roles
from spgkit.model import build_model
from spgkit.study import StudyError, check_study
from spgkit.train import train_step

SPG = [HeadSpec("spg_b", {"width": 8}), HeadSpec("spg_c", {"width": 8})]


def one_step(model, size: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return train_step(model, model, optimizer, torch.randn(2, 3, size, size), torch.tensor([0, 2]))


def cam_side(model, size: int) -> int:
    with torch.no_grad():
        cams = model.eval()(torch.randn(1, 3, size, size)).classifier.cams
    assert cams.shape[:2] == (1, 3)
    return cams.shape[-1]


def test_default_roles_follow_strides_or_depth():
    # A CNN's stride-4 and stride-8 stages; a ViT's blocks, all at the patch size, by depth.
    assert default_roles([2, 4, 8, 16, 32]) == {"low": 1, "mid": 2, "late": 3, "high": 4}
    assert default_roles([4, 8, 16, 32]) == {"low": 0, "mid": 1, "late": 2, "high": 3}
    assert default_roles([16] * 12) == {"low": 2, "mid": 5, "late": 10, "high": 11}
    assert default_roles([8, 16, 32]) == {"low": 0, "mid": 0, "late": 1, "high": 2}


def test_timm_cnn_by_name_trains_and_maps_at_its_last_stride(registry):
    model = build_model(3, [], "timm:resnet18", registry=registry, classifier_width=16)
    stages = model.backbone.stages
    assert {role: (info.channels, info.stride, info.module) for role, info in stages.items()} == {
        "low": (64, 4, "layer1"), "mid": (128, 8, "layer2"), "late": (256, 16, "layer3"), "high": (512, 32, "layer4"),
    }  # fmt: skip
    before = model.backbone.net.conv1.weight.clone()  # the stem: timm zero-inits each block's last norm
    terms = one_step(model, 64)
    assert torch.isfinite(terms["loss"]) and not torch.equal(before, model.backbone.net.conv1.weight)
    assert cam_side(model, 64) == 64 // 32


def test_timm_roles_and_dilation_are_overridable(registry):
    net = registry.backbone("timm:resnet18")(roles={"mid": 2, "late": 3, "high": 3}, output_stride=16).eval()
    assert {role: (info.channels, info.stride) for role, info in net.stages.items()} == {
        "mid": (128, 8), "late": (256, 16), "high": (256, 16),
    }  # fmt: skip
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64))["high"].shape == (1, 256, 4, 4)


@pytest.mark.parametrize("name, prefix", [("deit_tiny_patch16_224", 1), ("deit_tiny_distilled_patch16_224", 2)])
def test_vit_maps_are_its_patch_tokens_at_any_size(registry, name, prefix):
    net = registry.backbone(f"timm:{name}")().eval()
    vit = net.net.model
    assert vit.num_prefix_tokens == prefix
    assert {role: info.module for role, info in net.stages.items()} == {
        "low": "blocks.2", "mid": "blocks.5", "late": "blocks.10", "high": "blocks.11",
    }  # fmt: skip
    assert {info.stride for info in net.stages.values()} == {16}
    tokens = []
    vit.blocks[11].register_forward_hook(lambda module, args, out: tokens.append(out))
    for side in (32, 64):  # neither is the pretrained 224
        with torch.no_grad():
            high = net(torch.randn(2, 3, side, side))["high"]
        grid = side // 16
        assert high.shape == (2, 192, grid, grid)
        # The last block's tokens without the class (and distillation) token, on the patch grid.
        patches = tokens[-1][:, prefix:]
        assert patches.shape[1] == grid * grid
        assert torch.equal(high, patches.transpose(1, 2).reshape(2, 192, grid, grid))


def test_spg_trains_on_a_vit(registry):
    model = build_model(3, SPG, "timm:deit_tiny_patch16_224", registry=registry, classifier_width=16)
    before = model.backbone.net.model.patch_embed.proj.weight.clone()
    terms = one_step(model, 48)
    assert {"ce", "spg_b.b1", "spg_b.b2", "spg_c.c"} <= set(terms)
    assert all(torch.isfinite(terms[k]) for k in ("loss", "spg_b.b1", "spg_b.b2", "spg_c.c"))
    assert not torch.equal(before, model.backbone.net.model.patch_embed.proj.weight)
    assert cam_side(model, 48) == 48 // 16


def test_swin_channels_last_maps_come_out_nchw(registry):
    model = build_model(3, [], "timm:swin_tiny_patch4_window7_224", registry=registry, classifier_width=16)
    net = model.backbone.eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        raw = net.net(images)  # timm's Swin stages: N, H, W, C
        feats = net(images)
    assert raw[-1].shape == (1, 2, 2, 768)
    for role, side in (("low", 16), ("mid", 8), ("late", 4), ("high", 2)):
        assert feats[role].shape == (1, net.stages[role].channels, side, side)
    assert torch.equal(feats["high"], raw[-1].permute(0, 3, 1, 2))
    assert torch.isfinite(one_step(model, 64)["loss"])
    assert cam_side(model, 64) == 64 // 32


def test_channels_last_map_as_tall_as_its_channels(registry):
    # MambaOut's first stage at 64 px is 16 x 16 x 16: the shape cannot tell NHWC from NCHW, the
    # layout timm declares does.
    net = registry.backbone("timm:test_mambaout")().eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        raw, low = net.net(images)[0], net(images)["low"]
    assert raw.shape == low.shape == (1, 16, 16, 16)
    assert torch.equal(low, raw.permute(0, 3, 1, 2))


def test_unknown_timm_model_is_one_line_with_close_names(registry):
    expected = r"^unknown backbone 'timm:resnet_18': timm has no model 'resnet_18'; close names: timm:resnet18,"
    with pytest.raises(ValueError, match=expected) as info:
        build_model(3, [], "timm:resnet_18", registry=registry)
    assert "\n" not in str(info.value)


def test_weight_file_loads_offline_into_the_renamed_feature_net(registry, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was asked")

    # Without HF_HUB_OFFLINE spgkit would probe the hub before asking timm for pretrained weights.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(socket, "create_connection", no_network)
    source = timm.create_model("deit_tiny_patch16_224").state_dict()
    path = tmp_path / "deit.pth"
    torch.save(source, path)
    net = registry.backbone("timm:deit_tiny_patch16_224")(pretrained=True, weights=path)
    loaded = net.net.model.state_dict()  # timm's feature net holds the ViT as .model
    for key in ("pos_embed", "cls_token", "blocks.11.mlp.fc2.weight"):
        assert torch.equal(loaded[key], source[key]), key
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        registry.backbone("timm:deit_tiny_patch16_224")(weights=tmp_path / "nowhere.pth")
    # timm itself would load a file of another model into a feature net without a word.
    other = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18").state_dict(), other)
    with pytest.raises(ValueError, match=r"resnet.pth: 150 tensors missing, e.g. \['cls_token'"):
        registry.backbone("timm:deit_tiny_patch16_224")(weights=other)


def _study(backbone: str, size: int = 64, **backbone_args) -> Study:
    data = Data("synthwsol", {"num_images": 8, "image_size": size, "num_classes": 3}, image_size=size)
    return Study("s", data, (Arm("cam"), Arm("spg", tuple(SPG))), backbone=backbone, backbone_args=backbone_args, classifier_width=16)


def test_study_with_a_timm_backbone_passes_the_check(registry, tmp_path, monkeypatch):
    check_study(_study("timm:resnet18"), registry)
    with pytest.raises(StudyError, match="backbone: unknown backbone 'timm:resnet_18'"):
        check_study(_study("timm:resnet_18"), registry)
    # A ViT takes any size that is a multiple of its patch; the check says so for others.
    check_study(_study("timm:deit_tiny_patch16_224", size=96), registry)
    with pytest.raises(StudyError, match=r"image size 100 .* \(Input height \(100\) should be divisible by patch size \(16\)"):
        check_study(_study("timm:deit_tiny_patch16_224", size=100), registry)
    # An empty hub cache: pretrained weights offline are refused before anything trains.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(StudyError, match="backbone: pretrained 'resnet18' weights: the hub cannot be reached.*weights=<path"):
        check_study(_study("timm:resnet18", pretrained=True), registry)
