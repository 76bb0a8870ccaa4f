"""HaS, ADL and CutMix: each method's defining computation on hand-worked values, and its place in
the model. Side by side with the WSOL benchmark's code (same draws, weights and batch), all three
give identical images, logits and losses (docs/results.rst says how that was checked)."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from spgkit_adl import attention_dropout
from spgkit_cutmix import cut_box, mix
from spgkit_has import hide_patches

from spgkit.model import HeadSpec, build_model

TINY = dict(classifier_width=16)


# --------------------------------------------------------------------------- HaS


def test_has_hides_the_patches_whose_draw_is_at_most_the_rate():
    images = torch.arange(2 * 36, dtype=torch.float32).reshape(1, 2, 6, 6) + 1
    # 4-pixel patches on a 6x6 image: rows/cols 0-3 and 4-5. A draw equal to the rate hides.
    draws = torch.tensor([[[0.2, 0.7], [0.9, 0.5]]])
    hidden = hide_patches(images, draws, 4, 0.5)
    shown = torch.tensor(
        [
            [0, 0, 0, 0, 1, 1],
            [0, 0, 0, 0, 1, 1],
            [0, 0, 0, 0, 1, 1],
            [0, 0, 0, 0, 1, 1],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(hidden, images * shown)  # the same mask on every channel, filled with 0


def test_has_draws_per_image_and_patch_and_only_in_training(registry):
    model = build_model(3, [HeadSpec("has")], registry=registry, **TINY)
    has = model.heads["has"]
    assert (has.grid_size, has.drop_rate) == (4, 0.5)  # the benchmark's has_grid_size, has_drop_rate
    torch.manual_seed(0)
    images = torch.ones(8, 3, 64, 64)
    hidden, targets = has.transform_batch(images, torch.zeros(8, dtype=torch.long))
    share = (hidden[:, 0] == 0).float().mean((1, 2))
    assert 0.4 < share.mean() < 0.6 and share.std() > 0  # each image its own mask
    assert torch.equal(hidden[:, 0], hidden[:, 2]) and torch.equal(targets, torch.zeros(8, dtype=torch.long))
    # Patches are 4x4 blocks: every block is all hidden or all shown.
    blocks = hidden[:, 0].unfold(1, 4, 4).unfold(2, 4, 4).flatten(-2)
    assert torch.equal(blocks.amin(-1), blocks.amax(-1))
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    model.eval()(x, y)
    model.train()(x)  # no labels, no transform
    model.train()(x, y)
    assert torch.equal(seen[0], x) and torch.equal(seen[1], x) and (seen[2] == 0).float().mean() > 0.3


def test_has_arguments_are_checked(registry):
    with pytest.raises(ValueError, match="head 'has': drop_rate must be in"):
        build_model(3, [HeadSpec("has", {"drop_rate": 1.5})], registry=registry, **TINY)


# --------------------------------------------------------------------------- ADL

FEATURES = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[3.0, 2.0], [1.0, 8.0]]]])  # channel mean [[2, 2], [2, 6]]


def test_adl_drop_mask_zeroes_where_attention_reaches_the_threshold():
    # gamma * max = 0.9 * 6 = 5.4: only the position of mean 6 is dropped, in every channel.
    dropped = attention_dropout(FEATURES, torch.tensor(1.0), 0.9)
    assert torch.equal(dropped, torch.tensor([[[[1.0, 2.0], [3.0, 0.0]], [[3.0, 2.0], [1.0, 0.0]]]]))
    # A threshold of 1/3 (2 <= 6/3) drops every position.
    assert torch.equal(attention_dropout(FEATURES, torch.tensor(1.0), 1 / 3), torch.zeros_like(FEATURES))


def test_adl_importance_map_is_the_sigmoid_of_the_channel_mean():
    s2, s6 = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-6))  # 0.8808, 0.9975
    expected = FEATURES * torch.tensor([[s2, s2], [s2, s6]])
    assert torch.allclose(attention_dropout(FEATURES, torch.tensor(0.0), 0.9), expected, atol=1e-6)


def test_adl_acts_after_mixed_5d_mixed_6e_and_the_classifier_a3_in_training_only(registry, monkeypatch):
    model = build_model(3, [HeadSpec("adl")], registry=registry, backbone_args={"large_feature_map": True}, **TINY)
    assert model.classifier.a3[0].__class__.__name__ == "Identity"  # the benchmark's ADL model has no dropout
    seen = {}
    for module, key in ((model.backbone.Mixed_5d, "5d"), (model.backbone.Mixed_6a, "6a"), (model.backbone.Mixed_6e, "6e"),
                        (model.classifier.a3, "a3"), (model.classifier.a4, "a4")):  # fmt: skip
        module.register_forward_pre_hook(lambda module, args, key=key: seen.update({key: args[0]}))
    draws = []

    def rand(*args, **kwargs):  # the per-layer draw: 0.3 + 0.75 floors to 1 (drop mask)
        draws.append(args)
        return torch.tensor(0.3)

    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    with torch.no_grad():
        model.eval()(x, y)
        # ``forward`` runs a module without its hooks: the outputs before ADL.
        assert torch.equal(seen["6a"], model.backbone.Mixed_5d.forward(seen["5d"]))
        monkeypatch.setattr(torch, "rand", rand)
        model.train()(x, y)
        assert len(draws) == 3
        drop = [attention_dropout(model.backbone.Mixed_5d.forward(seen["5d"]), torch.tensor(1.0), 0.9)]
        drop.append(attention_dropout(model.backbone.Mixed_6e.forward(seen["6e"]), torch.tensor(1.0), 0.9))
        drop.append(attention_dropout(model.classifier.a3.forward(seen["a3"]), torch.tensor(1.0), 0.9))
    assert torch.equal(seen["6a"], drop[0]) and torch.equal(seen["a3"], drop[1]) and torch.equal(seen["a4"], drop[2])
    assert all((d == 0).any() for d in drop)


def test_a_copied_model_runs_its_own_adl(registry):
    model = build_model(3, [HeadSpec("adl")], registry=registry, **TINY)
    clone = copy.deepcopy(model)
    for net in (model, clone):
        hooks = [hook for path in ("backbone.Mixed_5d", "backbone.Mixed_6e", "classifier.a3") for hook in net.get_submodule(path)._forward_hooks.values()]
        assert len(hooks) == 3 and all(hook.transform.__self__ is net.heads["adl"] for hook in hooks)
    # The clone in eval mode leaves its features alone while the original trains: it computes
    # what the same weights compute without ADL.
    plain = build_model(3, [], registry=registry, dropout=0.0, **TINY)
    plain.load_state_dict(clone.state_dict())
    model.train(), clone.eval(), plain.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(clone(x).logits, plain(x).logits)


def test_adl_needs_the_layers_it_names(registry):
    with pytest.raises(ValueError, match="head 'adl' transforms the output of 'backbone.Mixed_5d', which this model does not have") as error:
        build_model(3, [HeadSpec("adl")], registry=registry, backbone="resnet50", **TINY)
    assert "mid: backbone.net.layer2" in str(error.value) and "high: backbone.net.layer4" in str(error.value)
    model = build_model(3, [HeadSpec("adl", {"at": ("backbone.net.layer3", "classifier.a3")})], registry=registry, backbone="resnet50", **TINY)
    assert model.heads["adl"].at == ("backbone.net.layer3", "classifier.a3")


# --------------------------------------------------------------------------- CutMix


def test_cutmix_box_follows_the_benchmark_rand_bbox():
    # lam 0.75: sqrt(0.25) = 0.5, a 2 x 3 box on a 4 x 6 image, halves floored around the centre.
    # Boxes in spgkit's convention, [[x0, y0, x1, y1]] with x1, y1 excluded.
    assert cut_box(4, 6, 0.75, (1, 5)).tolist() == [[4, 0, 6, 2]]  # rows 0..1, columns 4..5
    assert cut_box(4, 6, 0.75, (2, 2)).tolist() == [[1, 1, 3, 3]]
    # lam 0: the whole image, but centred on a corner only its quarter is inside.
    assert cut_box(4, 6, 0.0, (0, 0)).tolist() == [[0, 0, 3, 2]]
    # lam 0.99: int(4 * 0.1) = 0 rows, so no pixel is cut: no box, and mixing changes nothing.
    assert cut_box(4, 6, 0.99, (2, 3)).shape == (0, 4)


def test_cutmix_pastes_the_box_and_mixes_labels_by_area():
    images = torch.stack([torch.zeros(1, 4, 6), torch.ones(1, 4, 6)])
    targets = F.one_hot(torch.tensor([0, 2]), 3).float()
    mixed, mixed_targets = mix(images, targets, torch.tensor([1, 0]), np.array([[4.0, 0, 6, 2]]))
    pasted = torch.zeros(4, 6)
    pasted[0:2, 4:6] = 1
    assert torch.equal(mixed[0, 0], pasted) and torch.equal(mixed[1, 0], 1 - pasted)
    assert torch.equal(images[0], torch.zeros(1, 4, 6))  # the input batch is left as it was
    # 4 of 24 pixels pasted: lam = 5/6.
    assert torch.allclose(mixed_targets, torch.tensor([[5 / 6, 0, 1 / 6], [1 / 6, 0, 5 / 6]]))
    # No box: the batch and its targets come back as they were, to the bit.
    unmixed, same_targets = mix(images, targets, torch.tensor([1, 0]), cut_box(4, 6, 0.99, (2, 3)))
    assert torch.equal(unmixed, images) and torch.equal(same_targets, targets)


def test_cutmix_loss_is_the_area_weighted_sum_of_two_cross_entropies(registry):
    model = build_model(3, [HeadSpec("cutmix")], registry=registry, **TINY)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([[5 / 6, 0, 1 / 6], [1 / 6, 0, 5 / 6]])
    from spgkit.heads import ClassifierOutput
    from spgkit.model import ModelOutput

    out = ModelOutput(ClassifierOutput(None, None, logits), {}, targets)
    ce = model.losses(out, torch.tensor([0, 2]))["ce"]
    e = math.e
    own = (-math.log(e**2 / (e**2 + 2)) - math.log(1 / (e + 2))) / 2  # labels 0 and 2
    other = (-math.log(1 / (e**2 + 2)) - math.log(1 / (e + 2))) / 2  # their partners' labels 2 and 0
    assert ce.item() == pytest.approx(5 / 6 * own + 1 / 6 * other, rel=1e-6)


def test_cutmix_in_the_model_mixes_training_batches_only(registry):
    model = build_model(4, [HeadSpec("cutmix")], registry=registry, **TINY)
    x, y = torch.randn(6, 3, 64, 64), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.manual_seed(1)
    out = model.train()(x, y)
    t = out.targets
    assert t.shape == (6, 4) and torch.allclose(t.sum(1), torch.ones(6))
    assert torch.all(t[torch.arange(6), y] >= t.max(1).values - 0.5)  # own label keeps a share
    assert torch.equal(model.eval()(x, y).targets, y)
    off = build_model(4, [HeadSpec("cutmix", {"beta": 0})], registry=registry, **TINY)
    assert torch.equal(off.train()(x, y).targets, y)


def test_methods_compose_and_a_second_classifier_learns_the_mixed_targets(registry):
    heads = [HeadSpec("has"), HeadSpec("cutmix"), HeadSpec("acol"), HeadSpec("adl")]
    model = build_model(4, heads, registry=registry, **TINY)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    out = model.train()(x, y)
    assert out.targets.shape == (4, 4) and not torch.equal(out.targets, F.one_hot(y, 4).float())
    terms = model.losses(out, y)
    logits_b = out.heads["acol"].map.mean((2, 3))
    assert torch.allclose(terms["acol.ce_b"], F.cross_entropy(logits_b, out.targets))
    assert all(torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
