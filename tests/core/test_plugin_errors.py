"""Errors from plugin code name the plugin, its distribution, the head (or backbone) and the method;
bad arguments are ValueError/TypeError naming the head and argument; a too-small image stays the
plain RuntimeError of the convolution, so the three can be told apart (issue 21)."""

import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import spgkit
from spgkit.backbones import AttentionBackbone, StageInfo, check_roles
from spgkit.heads import GuidanceHead, HeadOutput, ModelSpec
from spgkit.model import HeadSpec, build_model
from spgkit.plugins import BackboneError, HeadError, PluginError, Registry, get_plugin_manager

TINY = dict(classifier_width=8, backbone="inception_v3")
PLUGIN = "myhead (my-dist)"


class Configurable(GuidanceHead):
    """A head whose every method misbehaves on request."""

    name = "myhead"

    def __init__(self, spec, *, fail: str = "", result: str = ""):
        super().__init__(spec)
        self.fail, self.result = fail, result
        if fail == "init":
            raise KeyError("missing_setting")
        self.conv = nn.Conv2d(spec.stage("high").channels, 1, 1)

    def feature_transforms(self):
        if self.fail == "feature_transforms":
            raise AttributeError("no such layer list")
        if self.fail == "transform":
            return {"classifier.a3": self._broken}
        return {}

    def _broken(self, x):
        raise IndexError("transform index 9")

    def transform_batch(self, images, targets):
        if self.fail == "transform_batch":
            raise ZeroDivisionError("division by zero")
        if self.result == "batch":
            return images  # not (images, targets)
        return images, targets

    def forward(self, ctx):
        if self.fail == "forward":
            raise ValueError("boom in forward")
        if self.fail == "interrupt":
            raise KeyboardInterrupt
        if self.fail == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        n, k = ctx.classifier.cams.shape[:2]
        logits = self.conv(ctx.features["high"])
        if self.result == "dict":
            return {"losses": {}}
        if self.result == "map5":
            return HeadOutput(map=logits.repeat(1, 5, 1, 1))
        if self.result == "map_k":
            return HeadOutput(map=logits.repeat(1, k, 1, 1))
        if self.result == "map1":
            return HeadOutput(map=logits)
        if self.result == "map3d":
            return HeadOutput(map=logits[:, 0])
        if self.result == "loss_vector":
            return HeadOutput(losses={"bce": logits.flatten(1).mean(1)})
        if self.result == "loss_float":
            return HeadOutput(losses={"bce": 0.5})
        if self.result == "loss_long":
            return HeadOutput(losses={"bce": torch.tensor(1)})
        if self.result == "stat_vector":
            return HeadOutput(stats={"share": torch.ones(n)})
        return HeadOutput(losses={"bce": logits.mean()}, stats={"share": logits.detach().mean()})


class MyPlugin:
    @spgkit.hookimpl
    def spgkit_register_heads(self, register):
        register(Configurable)


@pytest.fixture
def my_registry(plugin_manager):
    plugin_manager.register(MyPlugin(), name=PLUGIN)
    return Registry(plugin_manager)


def _model(registry, **args):
    return build_model(2, [HeadSpec("myhead", args)], registry=registry, **TINY)


IMAGES, LABELS = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])


# --------------------------------------------------------------------------- 1: every call wrapped


def test_constructor_bug_is_a_head_error_naming_plugin_head_and_method(my_registry):
    with pytest.raises(HeadError) as info:
        _model(my_registry, fail="init")
    assert str(info.value) == "head 'myhead' (plugin 'myhead (my-dist)') failed in __init__: KeyError: 'missing_setting'"
    assert (info.value.head, info.value.plugin, info.value.method) == ("myhead", PLUGIN, "__init__")
    assert isinstance(info.value.__cause__, KeyError)


def test_forward_bug_is_a_head_error(my_registry):
    model = _model(my_registry, fail="forward").eval()
    with pytest.raises(HeadError) as info:
        model(IMAGES)
    assert str(info.value) == "head 'myhead' (plugin 'myhead (my-dist)') failed in forward: ValueError: boom in forward"
    assert info.value.method == "forward"


def test_transform_batch_and_feature_transforms_bugs_are_head_errors(my_registry):
    model = _model(my_registry, fail="transform_batch").train()
    model(IMAGES)  # no labels: no batch transform
    with pytest.raises(HeadError, match=r"^head 'myhead' \(plugin 'myhead \(my-dist\)'\) failed in transform_batch: ZeroDivisionError: division by zero$"):
        model(IMAGES, LABELS)
    with pytest.raises(HeadError, match=r"^head 'myhead' \(plugin 'myhead \(my-dist\)'\) failed in feature_transforms: AttributeError: no such layer list$"):
        _model(my_registry, fail="feature_transforms")
    model = _model(my_registry, fail="transform")
    model.eval()(IMAGES)  # transforms act in training only
    with pytest.raises(HeadError, match=r"failed in its feature transform of 'classifier.a3': IndexError: transform index 9$"):
        model.train()(IMAGES, LABELS)
    with pytest.raises(HeadError, match=r"^head 'myhead' \(plugin 'myhead \(my-dist\)'\): transform_batch returned a tensor of shape \(2, 3, 32, 32\) \(float32\); it must return \(images, targets\)"):
        _model(my_registry, result="batch").train()(IMAGES, LABELS)


def test_interrupts_and_out_of_memory_pass_through_unwrapped(my_registry):
    with pytest.raises(KeyboardInterrupt):
        _model(my_registry, fail="interrupt").eval()(IMAGES)
    with pytest.raises(torch.cuda.OutOfMemoryError) as info:
        _model(my_registry, fail="oom").eval()(IMAGES)
    assert not isinstance(info.value, PluginError)


def test_a_backbone_plugin_that_fails_is_named(plugin_manager):
    class Tiny(AttentionBackbone):
        name = "tiny_bb"

        def __init__(self, fail: str = ""):
            if fail == "init":
                raise LookupError("no such block")
            super().__init__()
            self.fail = fail
            self.conv = nn.Conv2d(3, 8, 3, stride=4)
            self.stages = {"high": StageInfo(8, 4, "conv")}

        def forward(self, x):
            if self.fail == "forward":
                raise KeyError("high")
            return {"high": self.conv(x)}

    class BackbonePlugin:
        @spgkit.hookimpl
        def spgkit_register_backbones(self, register):
            register(Tiny)

    plugin_manager.register(BackbonePlugin(), name="tinybb (bb-dist)")
    registry = Registry(plugin_manager)
    with pytest.raises(BackboneError, match=r"^backbone 'tiny_bb' \(plugin 'tinybb \(bb-dist\)'\) could not be built: LookupError: no such block$"):
        build_model(2, backbone="tiny_bb", backbone_args={"fail": "init"}, classifier_width=4, registry=registry)
    model = build_model(2, backbone="tiny_bb", backbone_args={"fail": "forward"}, classifier_width=4, registry=registry)
    with pytest.raises(BackboneError, match=r"^backbone 'tiny_bb' \(plugin 'tinybb \(bb-dist\)'\) failed in forward: KeyError: 'high'$"):
        model.eval()(IMAGES)
    # An input too small for the convolution stays the RuntimeError torch raises.
    model = build_model(2, backbone="tiny_bb", classifier_width=4, registry=registry)
    with pytest.raises(RuntimeError) as info:
        model.eval()(torch.randn(1, 3, 2, 2))
    assert not isinstance(info.value, PluginError)


# --------------------------------------------------------------------------- 2: the contract


def test_forward_must_return_a_head_output(my_registry):
    with pytest.raises(HeadError, match=r"^head 'myhead' \(plugin 'myhead \(my-dist\)'\): forward returned a dict, not a HeadOutput$"):
        _model(my_registry, result="dict").eval()(IMAGES)


def test_a_map_has_one_channel_per_class_or_one(my_registry):
    with pytest.raises(HeadError, match=r"^head 'myhead' \(plugin 'myhead \(my-dist\)'\): forward returned as its map a tensor of shape \(2, 5, \d+, \d+\) \(float32\); a head's map is \(2, 2, h, w\), one channel per class, or \(2, 1, h, w\)$"):
        _model(my_registry, result="map5").eval()(IMAGES)
    with pytest.raises(HeadError, match=r"forward returned as its map a tensor of shape \(2, \d+, \d+\)"):
        _model(my_registry, result="map3d").eval()(IMAGES)
    # The maps the contract allows are fused: the fused map is at least the normalised CAM.
    for result in ("map1", "map_k"):
        model = _model(my_registry, result=result).eval()
        with torch.no_grad():
            out = model(IMAGES)
            fused = model.localization_maps(out, LABELS)
        assert out.heads["myhead"].map.shape[1] == (1 if result == "map1" else 2)
        assert fused.shape == out.classifier.cams.shape[:1] + out.classifier.cams.shape[2:]


@pytest.mark.parametrize(
    "result, what",
    [
        ("loss_vector", r"returned loss 'bce' as a tensor of shape \(2,\) \(float32\); a loss is a 0-d floating-point tensor"),
        ("loss_float", r"returned loss 'bce' as a float; a loss is a 0-d floating-point tensor"),
        ("loss_long", r"returned loss 'bce' as a tensor of shape \(\) \(int64\); a loss is a 0-d floating-point tensor"),
        ("stat_vector", r"returned stat 'share' as a tensor of shape \(2,\) \(float32\); a stat is a 0-d tensor"),
    ],
)
def test_losses_and_stats_must_be_scalar_tensors(my_registry, result, what):
    model = _model(my_registry, result=result).train()
    out = model(IMAGES, LABELS)
    with pytest.raises(HeadError, match=rf"^head 'myhead' \(plugin 'myhead \(my-dist\)'\): forward {what}"):
        model.losses(out, LABELS)
        model.stats(out)


def test_a_good_head_trains_through_the_guards(my_registry):
    model = _model(my_registry).train()
    out = model(IMAGES, LABELS)
    terms = model.losses(out, LABELS)
    assert set(terms) == {"ce", "myhead.bce"} and torch.equal(terms["myhead.bce"], out.heads["myhead"].losses["bce"])
    assert set(model.stats(out)) == {"myhead.share"}


# --------------------------------------------------------------------------- 3: undecorated hooks


def _fake_distribution(root: Path, dist: str, module: str, body: str) -> None:
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[spgkit]\n{module} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(body))


def test_an_entry_point_hook_without_hookimpl_is_refused(tmp_path, monkeypatch):
    body = """
        from spgkit.heads import GuidanceHead

        class Tiny(GuidanceHead):
            name = "tiny"

        def spgkit_register_heads(register):  # no @spgkit.hookimpl
            register(Tiny)
        """
    _fake_distribution(tmp_path, "spgkit-undecorated", "undecorated_plugin", body)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(PluginError) as info:
            get_plugin_manager(autoload=True)
    finally:
        sys.modules.pop("undecorated_plugin", None)
    assert str(info.value) == (
        "spgkit plugin 'undecorated_plugin' (undecorated_plugin) from distribution 'spgkit-undecorated': function "
        "'spgkit_register_heads' is not decorated with @spgkit.hookimpl, so spgkit never calls it; decorate it with "
        "@spgkit.hookimpl (import spgkit first)"
    )


def test_a_hand_registered_hook_without_hookimpl_is_refused(plugin_manager):
    class Forgot:
        def spgkit_register_heads(self, register):
            register(Configurable)

    plugin_manager.register(Forgot(), name="forgot (local)")
    with pytest.raises(PluginError, match=r"^plugin 'forgot \(local\)': function 'spgkit_register_heads' is not decorated with @spgkit.hookimpl"):
        Registry(plugin_manager)


def test_register_with_its_arguments_swapped_says_which_comes_first(plugin_manager):
    class Swapped:
        @spgkit.hookimpl
        def spgkit_register_heads(self, register):
            register("configurable", Configurable)

    plugin_manager.register(Swapped(), name="swapped (local)")
    with pytest.raises(PluginError, match=r"^plugin 'swapped \(local\)' called register\('configurable', \.\.\.\): register takes the head first, then its name"):
        Registry(plugin_manager)


# --------------------------------------------------------------------------- 4: head arguments


def test_spg_thresholds_high_below_low_are_refused(registry):
    spg_b, spg_c = registry.head("spg_b"), registry.head("spg_c")
    spec = ModelSpec({"mid": StageInfo(16, 8, "a"), "late": StageInfo(16, 8, "b"), "high": StageInfo(16, 8, "c")}, 2, 8)
    message = r"head 'spg_b': b2_thresholds \(delta_h, delta_l\) = \(0.1, 0.7\): delta_h 0.1 is below delta_l 0.7"
    with pytest.raises(ValueError, match=message):
        spg_b(spec, width=4, b2_thresholds=(0.1, 0.7))
    with pytest.raises(ValueError, match=r"head 'spg_b': b1_thresholds \(delta_h, delta_l\) = \(0.2, 0.3\)"):
        spg_b(spec, width=4, b1_thresholds=[0.2, 0.3])
    with pytest.raises(ValueError, match=r"head 'spg_c': thresholds \(delta_h, delta_l\) = \(0.05, 0.1\): delta_h 0.05 is below delta_l 0.1"):
        spg_c(spec, width=4, thresholds=(0.05, 0.1))
    # Through build_model the plugin is named too, once.
    with pytest.raises(ValueError) as info:
        build_model(2, [HeadSpec("spg_b", {"b2_thresholds": (0.1, 0.7)})], registry=registry, **TINY)
    assert str(info.value) == (
        "head 'spg_b': b2_thresholds (delta_h, delta_l) = (0.1, 0.7): delta_h 0.1 is below delta_l 0.7; object "
        "pixels are those above delta_h, background those below delta_l (head from plugin 'spg (spgkit-spg)')"
    )
    # Equal thresholds (no ignored band) and the JSON form of a pair (a list) are accepted.
    assert spg_b(spec, width=4, b1_thresholds=[0.5, 0.5]).b1_thresholds == (0.5, 0.5)
    assert spg_b(spec, width=4, b2_thresholds="spg_code").b2_thresholds == (0.7, 0.05)


@pytest.mark.parametrize(
    "head, args, error, message",
    [
        ("spg_b", {"width": -3}, ValueError, "head 'spg_b': width must be at least 1, not -3"),
        ("spg_b", {"width": 2.5}, TypeError, "head 'spg_b': argument 'width' must be int, not 2.5"),
        ("spg_b", {"b2_thresholds": (1.5, 0.1)}, ValueError, "head 'spg_b': b2_thresholds delta_h must be in [0, 1], not 1.5"),
        ("spg_b", {"b1_thresholds": (0.5, 0.2, 0.1)}, TypeError, "head 'spg_b': b1_thresholds must be a pair (delta_h, delta_l), not (0.5, 0.2, 0.1)"),
        ("spg_b", {"b2_thresholds": "paper"}, ValueError, "head 'spg_b': unknown b2_thresholds preset 'paper'"),
        ("spg_c", {"depth": 0}, ValueError, "head 'spg_c': depth must be at least 1, not 0"),
        ("acol", {"width": 0}, ValueError, "head 'acol': width must be at least 1, not 0"),
        ("acol", {"delta": 1.5}, ValueError, "head 'acol': delta must be in [0, 1], not 1.5"),
        ("acol", {"dropout": 1.0}, ValueError, "head 'acol': dropout must be in [0, 1), not 1.0"),
        ("has", {"grid_size": 2.5}, TypeError, "head 'has': argument 'grid_size' must be int, not 2.5"),
        ("has", {"drop_rate": float("nan")}, ValueError, "head 'has': drop_rate must be in [0, 1], not nan"),
        ("adl", {"at": "classifier.a3"}, TypeError, "head 'adl': at must be a tuple of module paths, not one string; write at=('classifier.a3',)"),
        ("cutmix", {"beta": math.inf}, ValueError, "head 'cutmix': beta must be finite and at least 0, not inf"),
        ("cutmix", {"prob": "1"}, TypeError, "head 'cutmix': argument 'prob' must be float, not '1'"),
    ],
)
def test_bad_head_arguments_name_head_argument_and_plugin(registry, head, args, error, message):
    heads = [HeadSpec("spg_b"), HeadSpec(head, args)] if head == "spg_c" else [HeadSpec(head, args)]
    with pytest.raises(error) as info:
        build_model(2, heads, registry=registry, **TINY)
    assert type(info.value) is error
    assert str(info.value).startswith(message)
    plugin = "spg" if head.startswith("spg") else head
    assert str(info.value).endswith(f"(head from plugin '{plugin} (spgkit-{plugin})')")
    assert "\n" not in str(info.value)


def test_bad_model_arguments_are_named():
    with pytest.raises(TypeError, match="model: num_classes must be an integer, not 100000000000.0"):
        build_model(1e11, backbone="inception_v3")
    with pytest.raises(ValueError, match="model: classifier_width must be at least 1, not -3"):
        build_model(2, backbone="inception_v3", classifier_width=-3)


# --------------------------------------------------------------------------- 5: backbone roles


def test_a_role_past_the_model_names_the_index_and_the_stages(registry):
    roles = {"low": 1, "mid": 1, "late": 2, "high": 7}
    with torch.device("meta"), pytest.raises(ValueError) as info:
        build_model(2, [], backbone="tf_efficientnet_lite0", backbone_args={"roles": roles, "output_stride": None}, registry=registry)
    assert str(info.value) == "backbone 'tf_efficientnet_lite0': roles['high'] = 7 is past the model: it has 5 feature stages, indices 0 to 4"
    with pytest.raises(TypeError, match=r"backbone 'm': roles\['high'\] must be an integer stage index, not '2'"):
        check_roles("m", {"high": "2"}, 5)
    # Negative indices count from the end, as in Python.
    assert check_roles("m", {"low": 1, "high": -1}, 5) == {"low": 1, "high": 4}
    with torch.device("meta"):
        model = build_model(2, [], backbone="tf_efficientnet_lite0", backbone_args={"roles": {"high": -3}, "output_stride": None}, registry=registry)
    assert model.backbone.stages["high"].module == "blocks.2" and model.backbone.stages["high"].channels == 40


# --------------------------------------------------------------------------- 6: on the meta device


def _check_like_the_study(registry, heads, size=32, **kwargs):
    """What study.check_study does: build on the meta device, one forward pass in eval mode."""
    with torch.device("meta"):
        model = build_model(2, heads, registry=registry, **{**TINY, **kwargs})
        model.eval()(torch.empty(2, 3, size, size))


def test_meta_check_tells_head_bugs_bad_arguments_and_small_images_apart(my_registry):
    with pytest.raises(HeadError, match=r"^head 'myhead' \(plugin 'myhead \(my-dist\)'\) failed in forward: ValueError: boom in forward$"):
        _check_like_the_study(my_registry, [HeadSpec("myhead", {"fail": "forward"})])
    with pytest.raises(HeadError, match=r"^head 'myhead' \(plugin 'myhead \(my-dist\)'\): forward returned as its map a tensor of shape \(2, 5,"):
        _check_like_the_study(my_registry, [HeadSpec("myhead", {"result": "map5"})])
    with pytest.raises(HeadError, match="failed in __init__: KeyError"):
        _check_like_the_study(my_registry, [HeadSpec("myhead", {"fail": "init"})])
    with pytest.raises(ValueError, match="head 'spg_b': width must be at least 1, not -3") as info:
        _check_like_the_study(my_registry, [HeadSpec("spg_b", {"width": -3})])
    assert not isinstance(info.value, RuntimeError)
    with pytest.raises(PluginError, match="unknown head 'spg_d'"):
        _check_like_the_study(my_registry, [HeadSpec("spg_d")])
    # Too small an image: the convolution's RuntimeError, no PluginError.
    with pytest.raises(RuntimeError, match="Kernel size can't be greater than actual input size") as info:
        _check_like_the_study(my_registry, [HeadSpec("myhead")], size=8)
    assert not isinstance(info.value, PluginError)
    _check_like_the_study(my_registry, [HeadSpec("myhead"), HeadSpec("spg_b", {"width": 4})], size=32)
