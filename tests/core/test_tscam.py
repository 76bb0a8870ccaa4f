"""The contract that lets heads read a transformer's attention, and TS-CAM on it: the attention
arithmetic by hand on a 2-block, 4-token transformer, the three map modes by hand, and the errors.
Side by side with the authors' code: ``benchmarks/tscam_reference.py`` (docs/results.rst)."""

import pytest
import torch
from torch import nn
from spgkit_tscam import TSCAM, token_attention

from spgkit.backbones import AttentionBackbone
from spgkit.heads import GuidanceHead, HeadOutput, ModelSpec
from spgkit.model import Classifier, ClassifierOutput, HeadSpec, ModelOutput, WSOLModel, build_model
from spgkit.plugins import HeadError, Registered

#: A 2-block transformer: roles on blocks 0 and 1 keep only those (timm prunes the rest).
TOY_ROLES = {"low": 0, "mid": 0, "late": 0, "high": 1}
TOY = dict(backbone="timm:deit_tiny_patch16_224", backbone_args={"roles": TOY_ROLES, "final_norm": True})

# Two blocks, two heads, four tokens: the class token and three patches (a 1 x 3 grid). Only row 0
# (the class token's attention) and columns 1-3 (the patches) enter TS-CAM's map.
ATTENTION = (
    torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1], [0.9, 0.0, 0.0, 0.1]],
                  [[0.2, 0.6, 0.1, 0.1], [0.5, 0.5, 0.0, 0.0], [0.4, 0.2, 0.2, 0.2], [0.3, 0.3, 0.3, 0.1]]]),
    torch.tensor([[[0.5, 0.1, 0.0, 0.4], [0.8, 0.1, 0.0, 0.1], [0.1, 0.1, 0.1, 0.7], [0.2, 0.2, 0.2, 0.4]],
                  [[0.3, 0.3, 0.2, 0.2], [0.9, 0.0, 0.1, 0.0], [0.3, 0.3, 0.3, 0.1], [0.6, 0.0, 0.2, 0.2]]]),
)  # fmt: skip


def test_token_attention_by_hand():
    # Block 1: heads' mean of row 0, columns 1-3: ((0.2+0.6)/2, (0.3+0.1)/2, (0.4+0.1)/2) = (0.4, 0.2, 0.25);
    # block 2: ((0.1+0.3)/2, (0.0+0.2)/2, (0.4+0.2)/2) = (0.2, 0.1, 0.3); summed over blocks: (0.6, 0.3, 0.55).
    # (Mean over blocks: (0.3, 0.15, 0.275); heads summed: twice; column 0 instead: (0.7, 0.6, 0.9) ...)
    batch = tuple(a[None] for a in ATTENTION)
    assert torch.allclose(token_attention(batch, (1, 3)), torch.tensor([[[[0.6, 0.3, 0.55]]]]), atol=1e-6)
    # The patches are the last tokens, laid out row by row: four tokens as a class token and a 3 x 1 grid.
    assert torch.allclose(token_attention(batch, (3, 1)), torch.tensor([0.6, 0.3, 0.55]).reshape(1, 1, 3, 1), atol=1e-6)
    with pytest.raises(ValueError, match=r"head 'tscam': attention over 4 tokens has no class token beside the 2x2 = 4 patch tokens"):
        token_attention(batch, (2, 2))


def _toy_model(registry, **head_args):
    torch.manual_seed(0)
    return build_model(3, [HeadSpec("tscam", head_args)], registry=registry, **TOY).eval()


def test_the_backbone_gives_each_blocks_softmax_attention_and_the_class_token(registry):
    model = _toy_model(registry)
    vit = model.backbone.net.model
    assert len(vit.blocks) == 2 and all(not block.attn.fused_attn for block in vit.blocks)
    x = torch.randn(2, 3, 16, 48)  # 16-pixel patches: 1 x 3 of them, 4 tokens with the class token
    with torch.no_grad():
        features, extras = model.backbone.forward_extras(x, frozenset({"attention", "class_token"}))
        # Recomputed from the blocks' weights: softmax(q k^T / sqrt(d)) per head, block by block.
        tokens = vit._pos_embed(vit.patch_embed(x))
        expected = []
        for block in vit.blocks:
            q, k, _ = block.attn.qkv(block.norm1(tokens)).reshape(2, 4, 3, 3, 64).permute(2, 0, 3, 1, 4)
            expected.append((q @ k.transpose(-2, -1) / 8.0).softmax(-1))
            tokens = block(tokens)
    assert len(extras["attention"]) == 2
    for got, want in zip(extras["attention"], expected):
        assert got.shape == (2, 3, 4, 4) and torch.allclose(got, want, atol=1e-6)
    # The class token and the high role's patches both come through the final norm.
    normed = vit.norm(tokens)
    assert torch.allclose(extras["class_token"], normed[:, 0], atol=1e-6)
    assert torch.allclose(features["high"], normed[:, 1:].transpose(1, 2).reshape(2, 192, 1, 3), atol=1e-6)


def test_tscam_map_is_the_cam_times_the_token_attention_at_evaluation_only(registry):
    model = _toy_model(registry)
    assert isinstance(model.classifier.a3, nn.Identity) and model.classifier.a4.kernel_size == (3, 3)
    x, classes = torch.randn(2, 3, 16, 48), torch.tensor([2, 0])
    with torch.no_grad():
        out = model(x, classes=classes)
        features, extras = model.backbone.forward_extras(x, frozenset({"attention"}))
        cams = model.classifier.a4(features["high"])  # TS-CAM's head: one 3x3 conv, logits its mean
        attention = torch.stack(extras["attention"]).mean(2).sum(0)[:, 0, 1:].reshape(2, 1, 1, 3)
        maps = model.localization_maps(out, classes)
    assert torch.allclose(out.logits, cams.mean((2, 3)), atol=1e-6)
    assert torch.allclose(maps, (cams * attention)[torch.arange(2), classes], atol=1e-6)
    assert torch.allclose(out.heads["tscam"].visuals["attention"].amax((1, 2)), torch.ones(2))
    model.train()
    assert model(x, torch.tensor([0, 1])).heads["tscam"].map is None  # the reference couples at evaluation
    with torch.no_grad():
        plain = _toy_model(registry, couple=False)
        out = plain(x, classes=classes)
        assert out.heads["tscam"].map is None and torch.equal(plain.localization_maps(out, classes), out.classifier.cams[torch.arange(2), classes])


# --------------------------------------------------------------------------- map modes


def _fixed_head(head_name: str, mode: str, values) -> type[GuidanceHead]:
    class Fixed(GuidanceHead):
        name = head_name
        map_mode = mode

        def forward(self, ctx):
            return HeadOutput(map=torch.tensor(values, dtype=torch.float32).reshape(1, 1, 2, 2))

    return Fixed


CAM = torch.tensor([[[[9.0, 9.0], [9.0, 9.0]], [[1.0, 3.0], [5.0, 9.0]]]])  # class 1: min-max [[0, .25], [.5, 1]]
MAP = [2.0, 2.0, 4.0, 0.0]  # min-max [[.5, .5], [1, 0]]


def _fuse(*heads: type[GuidanceHead]) -> torch.Tensor:
    spec = ModelSpec({}, 2, 4)
    backbone = AttentionBackbone()
    backbone.stages = {}
    model = WSOLModel(backbone, Classifier(4, 2, 4), [cls(spec) for cls in heads])
    outputs = {cls.name: cls(spec).forward(None) for cls in heads}
    return model.localization_maps(ModelOutput(ClassifierOutput(None, CAM, None), outputs), torch.tensor([1]))[0]


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("max", [[0.5, 0.5], [1.0, 1.0]]),  # max of both min-max normalised (ACoL, the default)
        ("multiply", [[2.0, 6.0], [20.0, 0.0]]),  # the raw product (TS-CAM)
        ("replace", [[2.0, 2.0], [4.0, 0.0]]),  # the head's map alone
    ],
)
def test_map_modes_by_hand(mode, expected):
    assert torch.allclose(_fuse(_fixed_head("a", mode, MAP)), torch.tensor(expected))


def test_map_modes_combine_in_head_order():
    # max then multiply: [[.5, .5], [1, 1]] * [[2, 2], [4, 0]]; multiply then max: the product
    # [[2, 6], [20, 0]] normalised, [[.1, .3], [1, 0]], against the second map's [[.5, .5], [1, 0]].
    first = _fuse(_fixed_head("a", "max", MAP), _fixed_head("b", "multiply", MAP))
    assert torch.allclose(first, torch.tensor([[1.0, 1.0], [4.0, 0.0]]))
    second = _fuse(_fixed_head("a", "multiply", MAP), _fixed_head("b", "max", MAP))
    assert torch.allclose(second, torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    third = _fuse(_fixed_head("a", "replace", MAP), _fixed_head("b", "replace", [1.0, 0.0, 0.0, 1.0]))
    assert torch.equal(third, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


# --------------------------------------------------------------------------- errors


def test_a_head_that_reads_attention_needs_a_transformer(registry):
    with pytest.raises(ValueError, match=r"head 'tscam' reads the backbone's attention, which backbone 'resnet50' does not give"):
        build_model(3, [HeadSpec("tscam")], backbone="resnet50", registry=registry, classifier_width=8)


def test_a_transformer_without_a_class_token_gives_no_attention(registry):
    # Pooled over its patches, with register tokens first: token 0 of its attention is a register
    # token's, so reading its row as the class token's would give a map without a word.
    small = {"depth": 2, "embed_dim": 48, "num_heads": 2, "patch_size": 8}
    pooled = registry.backbone("timm:vit_tiny_patch16_224")(model_args={**small, "class_token": False, "global_pool": "avg", "reg_tokens": 4})
    assert pooled.extras == frozenset()
    assert registry.backbone("timm:vit_tiny_patch16_224")(model_args=small).extras == {"class_token", "attention"}
    with pytest.raises(ValueError, match=r"head 'tscam' reads the backbone's attention, which backbone 'vit_tiny_patch16_224' does not give \(it gives nothing more"):
        build_model(3, [HeadSpec("tscam")], backbone="timm:vit_tiny_patch16_224", backbone_args={"model_args": {**small, "class_token": False, "global_pool": "avg"}}, registry=registry)


def test_a_backbone_plugin_that_offers_attention_but_gives_none_is_named(registry):
    from spgkit.plugins import BackboneError

    model = _toy_model(registry)
    vit = model.backbone
    vit.forward_extras = lambda x, wanted: (vit(x), {})  # a plugin that declared extras and forgot to give them
    with pytest.raises(BackboneError, match=r"^backbone 'deit_tiny_patch16_224' \(plugin 'spgkit \(core\), timm'\) was asked for \['attention'\] by the heads but its forward_extras gave \[\]$"):
        model(torch.randn(1, 3, 16, 48))
    vit.forward_extras = lambda x, wanted: (vit(x), {"attention": (), "tokens": x})
    with pytest.raises(BackboneError, match=r"forward_extras gave \['attention', 'tokens'\]$"):
        model(torch.randn(1, 3, 16, 48))


def test_bad_declarations_and_arguments_name_the_head(registry):
    with pytest.raises(TypeError, match=r"^head 'tscam': argument 'couple' must be bool, not 'yes' \(head from plugin 'tscam"):
        build_model(3, [HeadSpec("tscam", {"couple": "yes"})], registry=registry, **TOY)
    with pytest.raises(TypeError, match=r"^head 'tscam': couple must be True or False, not 'yes'"):  # built by hand
        TSCAM(ModelSpec({}, 3, 8), couple="yes")

    class Odd(TSCAM):
        name = "odd"
        map_mode = "mean"

    class PlainCam(GuidanceHead):  # a head that asks for SPG-A's classifier by name
        name = "plain"
        classifier_form = "spg"

    registry.heads["odd"] = Registered("odd", Odd, "odd test")
    registry.heads["plain"] = Registered("plain", PlainCam, "plain test")
    with pytest.raises(HeadError, match=r"head 'odd' \(plugin 'odd test'\) declares map_mode = 'mean'; it must be one of max, multiply, replace"):
        build_model(3, [HeadSpec("odd")], registry=registry, **TOY)
    with pytest.raises(ValueError, match=r"heads disagree on the CAM classifier \{'tscam': 'conv3x3', 'plain': 'spg'\}"):
        build_model(3, [HeadSpec("tscam"), HeadSpec("plain")], registry=registry, **TOY)


def test_final_norm_is_for_transformers(registry):
    with pytest.raises(ValueError, match=r"backbone 'resnet50': final_norm is for vision transformers"):
        registry.backbone("timm:resnet50")(final_norm=True)


def test_model_args_reach_timm(registry):
    net = registry.backbone("timm:vit_tiny_patch16_224")(model_args={"depth": 2, "embed_dim": 48, "num_heads": 2, "patch_size": 8})
    assert len(net.net.model.blocks) == 2 and net.stages["high"].channels == 48
    assert net(torch.randn(1, 3, 32, 48))["high"].shape == (1, 48, 4, 6)  # 8-pixel patches
    with pytest.raises(TypeError, match=r"backbone 'vit_tiny_patch16_224': model_args must be a dict"):
        registry.backbone("timm:vit_tiny_patch16_224")(model_args=[("depth", 2)])
