"""
Write your own head: Hide-and-Seek as a plugin
==============================================

spgkit's core knows no method by name. SPG and ACoL are *guidance heads* that reach it through
plugin distributions, found by their entry points exactly as a third party's would be. This
tutorial adds a method the library does not ship, Hide-and-Seek, the same way:

1. write the head, a :class:`~spgkit.heads.GuidanceHead` subclass, and a hook that registers it;
2. package it as a tiny distribution with an ``[project.entry-points.spgkit]`` table;
3. install it and watch spgkit discover it;
4. run an ablation that puts it beside plain CAM and SPG-B, and combines it with SPG-B, without a
   line of new training code.

The ablation is a tiny, noisy CPU run (40-pixel images, a couple of hundred training images, two
epochs, one seed), there to show the mechanics, not to rank methods.
"""

# %%
# The method
# ----------
#
# Hide-and-Seek (HaS; Singh and Lee, ICCV 2017) attacks CAM's habit of lighting up only the most
# discriminative part of an object. During training it divides every image into a grid of patches
# and hides each patch with probability 0.5, by filling it with the mean pixel value. Whenever the
# discriminative part happens to be hidden, the classifier has to recognise the object from its
# other parts, so over training its class maps spread over more of the object. At test time
# nothing is hidden. Filling with the mean rather than with black keeps the statistics of the
# hidden patches close to those of the visible ones, which matters because at test time the
# network sees no hidden patches at all.
#
# HaS has no branch, no loss and no map of its own: it only changes the training images. That is
# what :meth:`~spgkit.heads.GuidanceHead.transform_images` is for. The model calls it on every
# head in training mode only, before the backbone sees the batch. Images reach the model already
# normalised, so "the mean" is 0 (the normalisation mean, which stands in for the dataset mean).
#
# The plugin distribution
# -----------------------
#
# A plugin is two files. The module holds the head and a function marked with
# :data:`spgkit.hookimpl` named after the hook it implements,
# :func:`~spgkit.hookspecs.spgkit_register_heads`: it calls ``register`` once per head class, and
# nothing else (training logic lives in the head, never in a hook).

import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

MODULE = '''\
"""Hide-and-Seek (Singh & Lee, ICCV 2017) as an spgkit guidance head."""

import torch
import torch.nn.functional as F

import spgkit
from spgkit.heads import GuidanceHead, ModelSpec


class HideAndSeek(GuidanceHead):
    """Hide-and-Seek: hide random grid patches of every training image.

    Each image is divided into ``grid`` x ``grid`` patches, and each patch is hidden with
    probability ``hide_prob``, independently per image and per step, by setting it to 0: the
    normalisation mean. Nothing is hidden at test time. The head has no layers, no loss and no map.

    Args:
        spec: the model spec (unused: the head has no layers to size).
        grid: patches per side. The paper hides square patches of 16 to 56 pixels of a 224-pixel
            image, a grid of 4 to 14.
        hide_prob: the probability of hiding a patch (0.5 in the paper).
    """

    name = "has"

    def __init__(self, spec: ModelSpec, *, grid: int = 4, hide_prob: float = 0.5):
        super().__init__(spec)
        if grid < 1:
            raise ValueError(f"grid must be at least 1, not {grid}")
        if not 0.0 <= hide_prob < 1.0:
            raise ValueError(f"hide_prob must be in [0, 1), not {hide_prob}")
        self.grid = grid
        self.hide_prob = hide_prob

    def transform_images(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        n, _, height, width = images.shape
        shown = torch.rand(n, 1, self.grid, self.grid, device=images.device) >= self.hide_prob
        # Nearest-neighbour upsampling turns each grid cell into a block of pixels.
        shown = F.interpolate(shown.to(images.dtype), size=(height, width), mode="nearest")
        return images * shown


@spgkit.hookimpl
def spgkit_register_heads(register):
    """Hide-and-Seek."""
    register(HideAndSeek)
'''

# %%
# The ``pyproject.toml`` declares the distribution, and its entry point in the ``spgkit`` group
# points at the module: that line is the whole of the wiring. The built-in plugins under
# ``plugins/spg`` and ``plugins/acol`` are laid out the same way.

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "spgkit-has"
version = "0.1.0"
description = "Hide-and-Seek (Singh & Lee, ICCV 2017) as an spgkit head"
requires-python = ">=3.10"
dependencies = ["spgkit"]

[project.entry-points.spgkit]
has = "spgkit_has"

[tool.setuptools]
packages = ["spgkit_has"]
"""

# %%
# Install it
# ----------
#
# We write the two files into a temporary folder and ``pip install`` it. In your own project you
# would run ``pip install -e path/to/spgkit-has`` once and be done; here, so that building the
# documentation leaves your environment as it found it, pip installs into a throwaway folder
# (``--target``) that we then put on ``sys.path``. ``--no-build-isolation`` builds with the
# setuptools already installed and ``--no-index`` keeps pip off the network.
#
# Should pip be unable to build here (an environment without setuptools, say), the fallback writes
# by hand the two things an installer leaves behind that matter to spgkit: the package, and a
# ``.dist-info`` folder whose ``entry_points.txt`` carries the entry point. The standard library's
# :mod:`importlib.metadata`, which spgkit uses to find plugins, reads exactly that.

workdir = tempfile.TemporaryDirectory(prefix="spgkit-has-")
root = Path(workdir.name)
source = root / "spgkit-has"
(source / "spgkit_has").mkdir(parents=True)
(source / "pyproject.toml").write_text(PYPROJECT)
(source / "spgkit_has" / "__init__.py").write_text(MODULE)
site = root / "site-packages"

pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
pip += ["--disable-pip-version-check", "--quiet", "--target", str(site), str(source)]
result = subprocess.run(pip, capture_output=True, text=True)
if result.returncode == 0:
    print("installed with pip:", sorted(p.name for p in site.iterdir() if not p.name.startswith("__")))
else:
    print("pip could not install here, writing the dist-info by hand:", result.stderr.strip()[-300:])
    (site / "spgkit_has").mkdir(parents=True)
    (site / "spgkit_has" / "__init__.py").write_text(MODULE)
    info = site / "spgkit_has-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: spgkit-has\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[spgkit]\nhas = spgkit_has\n")

# %%
# Discover it
# -----------
#
# The install folder goes on ``sys.path`` (a ``pip install`` into your environment would need no
# such step). A :class:`spgkit.plugins.Registry` then asks every plugin found through the
# ``spgkit`` entry-point group to register its heads and backbones, and remembers which plugin
# provided each. The test suite switches that discovery off
# (``SPGKIT_DISABLE_PLUGIN_AUTOLOAD=1``) to control exactly which plugins exist; this tutorial
# wants it on, whatever the environment says.

sys.path.insert(0, str(site))
importlib.invalidate_caches()  # let the import system and importlib.metadata see the new folder
os.environ["SPGKIT_DISABLE_PLUGIN_AUTOLOAD"] = "0"

from spgkit.plugins import Registry  # noqa: E402

registry = Registry()
for name, entry in sorted(registry.heads.items()):
    where = f"{entry.obj.__module__}.{entry.obj.__qualname__}"
    print(f"{name:6} {where:24} from {entry.plugin}")

# %%
# For plugins installed into the environment, ``spgkit heads`` prints the same list on the command
# line. A model that names a head nobody registered fails as it is built, with the list of heads
# that exist and where each comes from.
#
# See what it does
# ----------------
#
# :func:`spgkit.model.build_model` builds a model from registry names, like a study does. Calling
# the head's ``transform_images`` by hand on a few SynthWSOL images shows the hidden patches (the
# model itself calls it only in ``train()`` mode).

from spgkit.data import SynthWSOL, collate, eval_transform  # noqa: E402
from spgkit import HeadSpec  # noqa: E402
from spgkit.model import build_model  # noqa: E402

torch.set_num_threads(2)  # the tutorials are sized for a 2-core CPU
SIZE = 40  # SynthWSOL needs at least 40 px to fit its objects at the default part size
SYNTH = {"num_images": 240, "image_size": SIZE, "num_classes": 4}

model = build_model(4, [HeadSpec("has")], classifier_width=16, registry=registry)
has = model.heads["has"]
print(type(has).__name__, "grid:", has.grid, "hide_prob:", has.hide_prob)

mean, std = model.backbone.mean, model.backbone.std
samples = SynthWSOL(split="train", transform=eval_transform(SIZE, mean, std), **SYNTH)
batch = collate([samples[i] for i in range(6)])
torch.manual_seed(0)
hidden = has.transform_images(batch["images"], batch["labels"])


def to_rgb(image):
    return (image.permute(1, 2, 0) * torch.tensor(std) + torch.tensor(mean)).clamp(0, 1)


fig, axes = plt.subplots(2, 6, figsize=(9, 3.3))
for col in range(6):
    axes[0, col].imshow(to_rgb(batch["images"][col]))
    axes[1, col].imshow(to_rgb(hidden[col]))
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
axes[0, 0].set_ylabel("input")
axes[1, 0].set_ylabel("hidden (train)")
fig.tight_layout()
plt.show()

# %%
# The ablation
# ------------
#
# The study compares four arms under one protocol: plain CAM, HaS alone, SPG-B alone, and SPG-B
# with HaS. The last arm needs no new code: heads compose, and the model applies every head's
# transforms and runs every head's forward in an order that respects what each declares it needs.
# The CAM threshold is chosen on SynthWSOL's ``val`` split and everything is reported on
# ``test``.

from spgkit import Arm, Data, Evaluation, Study, Training  # noqa: E402
from spgkit.study import run_study  # noqa: E402

SPG_B = HeadSpec("spg_b", {"width": 16})
HAS = HeadSpec("has", {"grid": 4})

study = Study(
    name="has_ablation",
    data=Data("synthwsol", SYNTH, image_size=SIZE, max_eval=64),
    arms=(
        Arm("cam"),
        Arm("has", (HAS,)),
        Arm("spg_b", (SPG_B,)),
        Arm("spg_b+has", (SPG_B, HAS)),
    ),
    backbone_args={"large_feature_map": True},  # 5 x 5 maps at 40 px (2 x 2 with the extra pool)
    classifier_width=16,
    training=Training(
        epochs=2,
        batch_size=16,
        lr=0.05,
        new_layer_lr_mult=1.0,  # trained from scratch
        schedule="cosine",
        device="cpu",
        eval_every=0,
    ),
    evaluation=Evaluation(thresholds=50),
    figure_images=4,
)

start = time.perf_counter()
results = run_study(study, root / "runs", registry=registry, progress=False)
print(f"4 arms trained and evaluated in {time.perf_counter() - start:.0f} s\n")
print(results.results_md.read_text())

# %%
# ``run_study`` also drew the figures: each arm's localization map and boxes on the same test
# images (ground truth green, prediction red), what SPG-B offers figures (its maps and seed
# masks), and the training curves.

overlays = plt.imread(results.figures / "overlays.png")
fig, ax = plt.subplots(figsize=(8, 8 * overlays.shape[0] / overlays.shape[1]))
ax.imshow(overlays)
ax.axis("off")
plt.show()

# %%
# Reading the table
# -----------------
#
# This is a tiny, noisy CPU run: two epochs on a few hundred 40-pixel images with one seed. At
# this size the classifier barely gets past guessing, so differences between the arms are within
# the noise of a single seed; do not read a ranking into them. With fair tuning at full scale the
# WSOL benchmark (Choe et al., CVPR 2020) found HaS, SPG and plain CAM within a few points of each
# other. To compare for real, give the study more images, epochs and seeds, and run it on a GPU
# with ``spgkit run``.
#
# To keep ``has`` for good, move the two files into a repository of their own and install it with
# ``pip install -e .``: every study, the ``spgkit`` command and the test fixtures will find it.

workdir.cleanup()
