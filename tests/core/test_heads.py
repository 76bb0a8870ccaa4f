import pytest
import torch

from spgkit.model import HeadSpec, build_model, order_heads

TINY = dict(classifier_width=32, backbone="inception_v3")


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_spg_b_shared_really_shares(registry):
    shared = build_model(5, [HeadSpec("spg_b", {"shared": True})], registry=registry, **TINY).heads["spg_b"]
    unshared = build_model(5, [HeadSpec("spg_b", {"shared": False})], registry=registry, **TINY).heads["spg_b"]
    assert shared.b1_second[0].weight is shared.b2_second[0].weight
    assert shared.b1_out.weight is shared.b2_out.weight
    assert unshared.b1_second[0].weight is not unshared.b2_second[0].weight
    assert unshared.b1_out.weight is not unshared.b2_out.weight
    # Exactly one second conv (512x512x3x3 + 512) and one output conv (512 + 1) fewer.
    assert n_params(unshared) - n_params(shared) == 512 * 512 * 9 + 512 + 512 + 1


def test_acol_zeroes_exactly_the_positions_at_or_above_delta(registry):
    torch.manual_seed(0)
    model = build_model(3, [HeadSpec("acol", {"delta": 0.6})], registry=registry, **TINY).eval()
    seen = {}
    model.heads["acol"].classifier_b.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([2, 0])
    with torch.no_grad():
        out = model(images, labels)
        feats = model.backbone(images)["high"]
    cam = out.classifier.cams[torch.arange(2), labels]
    lo, hi = cam.amin((1, 2), keepdim=True), cam.amax((1, 2), keepdim=True)
    erased = (cam - lo) / (hi - lo) >= 0.6
    assert 0 < erased.sum() < erased.numel()  # the case is not trivial
    expected = feats * (~erased)[:, None]
    assert torch.equal(seen["x"], expected)
    assert torch.equal(out.heads["acol"].visuals["erased"], erased.to(torch.uint8))
    # Localization fuses by element-wise max of the two normalised maps.
    cam_b = out.heads["acol"].map[torch.arange(2), labels]
    nb = (cam_b - cam_b.amin((1, 2), keepdim=True)) / (cam_b.amax((1, 2), keepdim=True) - cam_b.amin((1, 2), keepdim=True))
    na = (cam - lo) / (hi - lo)
    assert torch.allclose(model.localization_maps(out, labels), torch.maximum(na, nb), atol=1e-6)


def test_spg_masks_and_supervision_chain(registry):
    torch.manual_seed(0)
    model = build_model(3, [HeadSpec("spg_c"), HeadSpec("spg_b")], registry=registry, **TINY)
    assert list(model.heads) == ["spg_b", "spg_c"]  # ordered by declared needs
    images, labels = torch.randn(2, 3, 48, 48), torch.tensor([1, 2])
    out = model(images, labels)
    b = out.heads["spg_b"].visuals
    for key in ("seed b1", "seed b2"):
        assert b[key].shape == (2, 48, 48) and set(b[key].unique().tolist()) <= {0, 1, 255}
        assert b[key].dtype == torch.uint8 and not b[key].requires_grad
    # SPG-C's seed is built from SPG-B's fused map, which SPG-B exports, with (0.7, 0.1).
    fused = (b["b1"] + b["b2"]) / 2
    assert torch.allclose(out.heads["spg_b"].exports["fused"], fused)
    from spgkit.guidance import seed_mask

    assert torch.equal(out.heads["spg_c"].visuals["seed c"], seed_mask(fused, 0.7, 0.1))
    losses = model.losses(out, labels)
    assert set(losses) == {"ce", "spg_b.b1", "spg_b.b2", "spg_c.c"}


def test_spg_c_without_spg_b_fails_at_build_time(registry):
    with pytest.raises(ValueError, match="'spg_c' needs head 'spg_b'"):
        build_model(3, [HeadSpec("spg_c")], registry=registry, **TINY)


def test_order_heads_detects_cycles():
    class A:
        needs_heads = ("b",)

    class B:
        needs_heads = ("a",)

    with pytest.raises(ValueError, match="cycle"):
        order_heads({"a": A, "b": B})


def test_bad_head_arguments_name_the_head(registry):
    with pytest.raises(TypeError, match="head 'spg_b': got an unexpected keyword argument 'sharred'; it takes shared, width"):
        build_model(3, [HeadSpec("spg_b", {"sharred": True})], registry=registry, **TINY)


def test_head_arguments_of_the_wrong_type_name_the_head_and_the_type(registry):
    with pytest.raises(TypeError, match=r"head 'spg_b': argument 'width' must be int, not 64\.5"):
        build_model(3, [HeadSpec("spg_b", {"width": 64.5})], registry=registry, **TINY)
    with pytest.raises(TypeError, match=r"head 'acol': argument 'width' must be int \| None, not '8'"):
        build_model(3, [HeadSpec("acol", {"width": "8"})], registry=registry, **TINY)
    build_model(3, [HeadSpec("acol", {"width": None, "delta": 1})], registry=registry, **TINY)  # an int is a float


def test_dropout_respects_train_and_eval(registry):
    model = build_model(3, [], registry=registry, backbone="inception_v3", dropout=0.5)
    x = torch.randn(1, 3, 48, 48)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x).logits, model(x).logits)
        model.train()
        model.backbone.eval()  # isolate the classifier's dropout from batch-norm statistics
        assert not torch.equal(model(x).logits, model(x).logits)


def test_parameter_groups_put_every_new_layer_in_new(registry):
    model = build_model(3, [HeadSpec("spg_b"), HeadSpec("acol")], registry=registry, **TINY)
    groups = model.parameter_groups()
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in groups["pretrained"]} == backbone_ids
    new_ids = {id(p) for p in groups["new"]}
    for module in (model.classifier, *model.heads.values()):
        assert {id(p) for p in module.parameters()} <= new_ids
    assert len(new_ids) + len(backbone_ids) == len(list(model.parameters()))


def test_batch_and_feature_transforms_run_in_training_only(plugin_manager):
    import spgkit
    from spgkit.heads import GuidanceHead
    from spgkit.plugins import Registry

    class Blank(GuidanceHead):
        """Zeroes the input's left half and relabels every image as the next class, and doubles
        Mixed_6e's output, while training."""

        name = "blank"

        def transform_batch(self, images, targets):
            out = images.clone()
            out[..., : images.shape[-1] // 2] = 0
            return out, (targets + 1) % 3

        def feature_transforms(self):
            return {"backbone.Mixed_6e": lambda x: 2 * x}

    class Plugin:
        @spgkit.hookimpl
        def spgkit_register_heads(self, register):
            register(Blank)

    plugin_manager.register(Plugin())
    model = build_model(3, [HeadSpec("blank")], registry=Registry(plugin_manager), classifier_width=8, dropout=0.0)
    seen = {}
    model.backbone.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    model.backbone.Mixed_6e.register_forward_pre_hook(lambda m, args: seen.update(into_6e=args[0]))
    model.classifier.register_forward_pre_hook(lambda m, args: seen.update(f=args[0]))
    images, labels = torch.randn(2, 3, 48, 48), torch.tensor([0, 2])
    model.train()
    out = model(images, labels)
    assert torch.equal(seen["x"][..., :24], torch.zeros(2, 3, 48, 24)) and torch.equal(seen["x"][..., 24:], images[..., 24:])
    with torch.no_grad():
        assert torch.allclose(seen["f"], 2 * model.backbone.Mixed_6e.forward(seen["into_6e"]), atol=1e-5)
    # The cross-entropy is taken against the transformed targets.
    assert torch.equal(out.targets, torch.tensor([1, 0]))
    assert torch.allclose(model.losses(out, labels)["ce"], torch.nn.functional.cross_entropy(out.logits, torch.tensor([1, 0])))
    model.eval()
    with torch.no_grad():
        out = model(images, labels)
        assert torch.equal(seen["x"], images) and torch.equal(out.targets, labels)
        assert torch.equal(seen["f"], model.backbone.Mixed_6e.forward(seen["into_6e"]))


def test_spg_normalize_scores_always_leaves_background_seeds(registry):
    # Push B2's output bias up so sigmoid(B2) > 0.5 everywhere: the raw B1 seed is all object or
    # ignored, with no background pixel; the min-max normalised one has background (its minimum is 0).
    from spgkit.guidance import minmax_normalize, seed_mask

    images, labels = torch.randn(2, 3, 48, 48), torch.tensor([1, 2])
    seeds = {}
    for normalize in (False, True):
        torch.manual_seed(0)
        heads = [HeadSpec("spg_b", {"normalize_scores": normalize}), HeadSpec("spg_c", {"normalize_scores": normalize})]
        model = build_model(3, heads, registry=registry, **TINY)
        with torch.no_grad():
            model.heads["spg_b"].b2_out.bias.fill_(3.0)
        out = model(images, labels)
        b = out.heads["spg_b"].visuals
        assert b["b2"].min() > 0.5
        seeds[normalize] = (b["seed b1"], out.heads["spg_c"].visuals["seed c"])
        fused = out.heads["spg_b"].exports["fused"]
        fused = minmax_normalize(fused) if normalize else fused
        assert torch.equal(seeds[normalize][1], seed_mask(fused, 0.7, 0.1))
    assert not (seeds[False][0] == 0).any()
    assert (seeds[True][0] == 0).any() and (seeds[True][0] == 1).any()
    assert (seeds[True][1] == 0).any()


def test_spg_c_without_feedback_leaves_the_trunk_alone(registry):
    torch.manual_seed(0)
    images, labels = torch.randn(2, 3, 48, 48), torch.tensor([1, 2])
    grads = {}
    for feedback in (True, False):
        torch.manual_seed(0)
        model = build_model(3, [HeadSpec("spg_b"), HeadSpec("spg_c", {"feedback": feedback})], registry=registry, **TINY)
        out = model(images, labels)
        model.losses(out, labels)["spg_c.c"].backward()
        grads[feedback] = model.classifier.a3[1].weight.grad
        assert model.heads["spg_c"].layers[0][0].weight.grad.abs().sum() > 0  # C itself learns either way
    assert grads[True].abs().sum() > 0 and grads[False] is None
