import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import spgkit
from spgkit.guidance import class_maps, masked_bce, minmax_normalize, seed_mask, upsample
from spgkit.heads import GuidanceHead, HeadOutput
from spgkit.model import HeadSpec, build_model
from spgkit.train import train_step
from spgkit.plugins import PluginError, Registry, get_plugin_manager

REPO = Path(__file__).resolve().parents[2]


class Objectness(GuidanceHead):
    """A third-party head: a 1x1 conv on the high stage that learns the CAM's seed mask."""

    name = "objectness"

    def __init__(self, spec):
        super().__init__(spec)
        self.conv = nn.Conv2d(spec.stage("high").channels, 1, 1)

    def forward(self, ctx):
        logits = self.conv(ctx.features["high"])
        if ctx.labels is None:
            return HeadOutput(map=logits)
        cam = minmax_normalize(class_maps(ctx.classifier.cams.detach(), ctx.labels))
        seed = seed_mask(upsample(cam, ctx.image_size), 0.7, 0.05)
        return HeadOutput(losses={"bce": masked_bce(logits, seed)}, map=logits)


class ThirdParty:
    @spgkit.hookimpl
    def spgkit_register_heads(self, register):
        register(Objectness)


def test_third_party_head_trains_beside_spg_b(plugin_manager):
    plugin_manager.register(ThirdParty(), name="objectness (test)")
    registry = Registry(plugin_manager)
    assert registry.heads["objectness"].plugin == "objectness (test)"
    torch.manual_seed(0)
    model = build_model(
        2, [HeadSpec("spg_b", {"width": 16}), HeadSpec("objectness")], registry=registry, classifier_width=32, dropout=0.0
    )
    before = model.heads["objectness"].conv.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    images, labels = torch.randn(8, 3, 48, 48), torch.arange(8) % 2
    history = []
    for _ in range(30):
        losses = train_step(model, model, opt, images, labels)
        history.append(losses["loss"].item())
    assert "spg_b.b1" in losses and "spg_b.b2" in losses
    assert not torch.equal(before, model.heads["objectness"].conv.weight)
    assert history[-1] < 0.3 * history[0], history
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert out.heads["objectness"].map is not None
    fused = model.localization_maps(out, labels)
    cam_only = minmax_normalize(class_maps(out.classifier.cams, labels))
    assert (fused >= cam_only - 1e-6).all() and not torch.allclose(fused, cam_only)


def test_unknown_head_lists_known_heads_and_their_distributions(registry):
    with pytest.raises(PluginError) as info:
        registry.head("spg_d")
    msg = str(info.value)
    assert "'spg_d'" in msg
    assert "spg_b (from spg (spgkit-spg))" in msg and "acol (from acol (spgkit-acol))" in msg


def test_duplicate_head_names_both_plugins(plugin_manager):
    class Clash:
        @spgkit.hookimpl
        def spgkit_register_heads(self, register):
            register(Objectness, name="spg_b")

    plugin_manager.register(Clash(), name="clash (other-dist)")
    with pytest.raises(PluginError) as info:
        Registry(plugin_manager)
    assert "spg (spgkit-spg)" in str(info.value) and "clash (other-dist)" in str(info.value)


def test_misspelled_hook_fails_check_pending():
    class Typo:
        @spgkit.hookimpl
        def spgkit_register_head(self, register):  # missing "s"
            pass

    pm = get_plugin_manager(autoload=False)
    pm.register(Typo())
    with pytest.raises(Exception, match="spgkit_register_head"):
        pm.check_pending()


def _fake_distribution(root: Path, dist: str, module: str, body: str) -> None:
    """An installed distribution as importlib.metadata sees it: a dist-info with entry points."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[spgkit]\n{module} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(body))


def test_entry_point_discovery_end_to_end(tmp_path, monkeypatch):
    _fake_distribution(
        tmp_path,
        "spgkit-tiny-head",
        "tiny_head_plugin",
        """
        import spgkit
        from spgkit.heads import GuidanceHead

        class Tiny(GuidanceHead):
            name = "tiny"

        @spgkit.hookimpl
        def spgkit_register_heads(register):
            register(Tiny)
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry(get_plugin_manager(autoload=True))
    assert registry.heads["tiny"].plugin == "tiny_head_plugin (spgkit-tiny-head)"
    # The built-in methods are discovered the same way, from their own distributions.
    assert registry.heads["spg_b"].plugin == "spg (spgkit-spg)"
    assert registry.heads["acol"].plugin == "acol (spgkit-acol)"
    sys.modules.pop("tiny_head_plugin", None)


def test_misspelled_hook_in_an_installed_plugin_is_a_plugin_error(tmp_path, monkeypatch):
    body = """
        import spgkit

        @spgkit.hookimpl
        def spgkit_register_head(register):  # missing "s"
            pass
        """
    _fake_distribution(tmp_path, "spgkit-typo", "typo_plugin", body)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"plugin 'typo_plugin \(spgkit-typo\)' implements unknown hook 'spgkit_register_head'; spgkit's hooks: .*spgkit_register_heads"):
        get_plugin_manager(autoload=True)
    sys.modules.pop("typo_plugin", None)


def test_plugin_that_fails_to_import_is_named(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "spgkit-broken", "broken_plugin", "raise ImportError('needs torch 9')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"'broken_plugin'.*'spgkit-broken'.*needs torch 9"):
        get_plugin_manager(autoload=True)


def test_core_imports_no_method():
    # An import statement naming a method module: spgkit_<method>, or any *.<method>.
    pattern = re.compile(r"^\s*(from|import)\s+[\w.]*\b(spgkit_)?(spg|acol|has|adl|cutmix)\b")
    assert pattern.match("from spgkit_spg import SPGB") and pattern.match("import plugins.acol")
    offenders = [
        f"{path}:{lineno}: {line.strip()}"
        for path in (REPO / "spgkit").rglob("*.py")
        for lineno, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.match(line)
    ]
    assert offenders == []
