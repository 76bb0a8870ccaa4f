"""
Write your own head: Cutout as a plugin
=======================================

spgkit's core knows no method by name. SPG, ACoL, HaS, ADL, CutMix and TS-CAM are *guidance heads* that
reach it through plugins. This tutorial adds a method the library does not ship, Cutout, the way a
first experiment does it, then the way a method is kept for good:

1. write the head, a :class:`~spgkit.heads.GuidanceHead` subclass, and a hook that registers it,
   in one Python file;
2. hand the file to spgkit (``spgkit run my_study.py -p cutout.py``, or ``plugins=`` in the study);
3. run an ablation that puts it beside plain CAM and SPG-B, and combines it with SPG-B, without a
   line of new training code;
4. package the same file as a tiny distribution with an ``[project.entry-points.spgkit]`` table,
   install it, and watch spgkit discover it, as it discovers the built-in methods.

The ablation is a tiny, noisy CPU run (40-pixel images, a couple of hundred training images, two
epochs, one seed), there to show the mechanics, not to rank methods.
"""

# %%
# The method
# ----------
#
# Cutout (DeVries and Taylor, 2017) hides one random square of every training image. It was made
# as a regulariser for classification, and the CutMix paper (Yun et al., ICCV 2019) compares it on
# weakly-supervised localization, because it attacks CAM's habit of lighting up only the most
# discriminative part of an object: whenever the square covers that part, the classifier has to
# recognise the object from its other parts, so over training its class maps may spread. At test
# time nothing is hidden. Hide-and-Seek, which spgkit ships (``plugins/has``), hides many small
# patches instead of one large square; CutMix (``plugins/cutmix``) fills the square with another
# image and mixes the labels.
#
# Cutout has no branch, no loss and no map of its own: it only changes the training images. That
# is what :meth:`~spgkit.heads.GuidanceHead.transform_batch` is for. The model calls it on every
# head in training only, before the backbone sees the batch, with the images and the
# classification targets (a head that mixes images, like CutMix, mixes the targets too; Cutout
# returns them as they are). Images reach the model already normalised, so filling with 0 fills
# with the normalisation mean.
#
# The head in one file
# --------------------
#
# The file holds the head and a function marked with :data:`spgkit.hookimpl` named after the hook
# it implements, :func:`~spgkit.hookspecs.spgkit_register_heads`: it calls ``register`` once per
# head class, and nothing else (training logic lives in the head, never in a hook).

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
"""Cutout (DeVries and Taylor, 2017) as an spgkit guidance head."""

import torch

import spgkit
from spgkit.heads import GuidanceHead, ModelSpec


class Cutout(GuidanceHead):
    """Cutout: hide one random square of every training image.

    The square's centre is drawn uniformly over the image, independently per image and per step;
    it spans ``size // 2`` pixels before the centre and ``size - size // 2`` from it, clipped to
    the image, so near a border less is hidden. Hidden pixels are set to 0, the normalisation
    mean. Nothing is hidden at test time; the head has no layers, no loss and no map.

    Args:
        spec: the model spec (unused: the head has no layers to size).
        size: the side of the square in pixels.
    """

    name = "cutout"

    def __init__(self, spec: ModelSpec, *, size: int = 16):
        super().__init__(spec)
        if size < 1:
            raise ValueError(f"size must be at least 1, not {size}")
        self.size = size

    def transform_batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, height, width = images.shape
        device = images.device
        top = torch.randint(height, (n, 1, 1), device=device) - self.size // 2
        left = torch.randint(width, (n, 1, 1), device=device) - self.size // 2
        rows = torch.arange(height, device=device)[None, :, None]
        cols = torch.arange(width, device=device)[None, None, :]
        hidden = (rows >= top) & (rows < top + self.size) & (cols >= left) & (cols < left + self.size)
        return images * ~hidden[:, None], targets  # the labels stay: only the images change


@spgkit.hookimpl
def spgkit_register_heads(register):
    """Cutout."""
    register(Cutout)
'''

# %%
# Hand it to spgkit
# -----------------
#
# That file is already a plugin. On the command line, ``-p`` registers it beside the installed
# plugins, for any command that looks heads up (``run``, ``tune``, ``heads``, ``evaluate``,
# ``localize``; repeat it for more files)::
#
#     spgkit heads -p cutout.py
#     spgkit run my_study.py -p cutout.py
#
# or the study names it, relative to the study file's folder, so the head travels with the study
# (and to the workers of ``--executor ray``, which load it from the same path)::
#
#     STUDY = Study(..., plugins=("cutout.py",))
#
# spgkit imports the file under a module name of its own and registers it with pluggy, exactly as
# it registers an installed distribution. Every run records a fingerprint of the source of each head
# it uses, here the file's bytes: edit ``cutout.py`` and its finished runs are refused (``--retrain``
# trains them again) instead of being reported as results of the new code. A missing file, a syntax
# error or a file without ``@spgkit.hookimpl`` is one line naming the file (and the line).
#
# In Python, a :class:`spgkit.plugins.Registry` takes the files. It also asks every installed plugin
# to register its heads, and remembers which plugin provided each. The test suite switches that
# discovery off (``SPGKIT_DISABLE_PLUGIN_AUTOLOAD=1``) to control exactly which plugins exist; this
# tutorial wants it on, whatever the environment says: SPG-B comes from its installed distribution.

workdir = tempfile.TemporaryDirectory(prefix="spgkit-cutout-")
root = Path(workdir.name)
head_file = root / "cutout.py"
head_file.write_text(MODULE)
os.environ["SPGKIT_DISABLE_PLUGIN_AUTOLOAD"] = "0"

from spgkit.plugins import Registry  # noqa: E402

registry = Registry(plugins=[head_file])
for name, entry in sorted(registry.heads.items()):
    print(f"{name:6} from {entry.plugin.replace(str(root), '<folder>')}")

# %%
# ``spgkit heads -p cutout.py`` prints the same list on the command line. A model that names a head
# nobody registered fails as it is built, with the list of heads that exist and where each comes
# from.
#
# See what it does
# ----------------
#
# :func:`spgkit.model.build_model` builds a model from registry names, like a study does. Calling
# the head's ``transform_batch`` by hand on a few SynthWSOL images shows the hidden squares (the
# model itself calls it only in ``train()`` mode).

from spgkit.data import SynthWSOL, collate, eval_transform  # noqa: E402
from spgkit import HeadSpec  # noqa: E402
from spgkit.model import build_model  # noqa: E402

torch.set_num_threads(2)  # the tutorials are sized for a 2-core CPU
SIZE = 40  # SynthWSOL needs at least 40 px to fit its objects at the default part size
SYNTH = {"num_images": 240, "image_size": SIZE, "num_classes": 4}

model = build_model(4, [HeadSpec("cutout")], classifier_width=16, registry=registry)
cutout = model.heads["cutout"]
print(type(cutout).__name__, "size:", cutout.size)

mean, std = model.backbone.mean, model.backbone.std
samples = SynthWSOL(split="train", transform=eval_transform(SIZE, mean, std), **SYNTH)
batch = collate([samples[i] for i in range(6)])
torch.manual_seed(0)
hidden, _ = cutout.transform_batch(batch["images"], batch["labels"])


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
# The study compares four arms under one protocol: plain CAM, Cutout alone, SPG-B alone, and
# SPG-B with Cutout. The last arm needs no new code: heads compose, and the model applies every head's
# transforms and runs every head's forward in an order that respects what each declares it needs.
# The CAM threshold is chosen on SynthWSOL's ``val`` split and everything is reported on
# ``test``. The study names its head file, so :func:`~spgkit.study.run_study` builds its registry
# with it.

from spgkit import Arm, Data, Evaluation, Study, Training  # noqa: E402
from spgkit.study import run_study  # noqa: E402

SPG_B = HeadSpec("spg_b", {"width": 16})
CUTOUT = HeadSpec("cutout", {"size": 16})

study = Study(
    name="cutout_ablation",
    data=Data("synthwsol", SYNTH, image_size=SIZE, max_eval=64),
    arms=(
        Arm("cam"),
        Arm("cutout", (CUTOUT,)),
        Arm("spg_b", (SPG_B,)),
        Arm("spg_b+cutout", (SPG_B, CUTOUT)),
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
    plugins=(str(head_file),),
)

start = time.perf_counter()
results = run_study(study, root / "runs", progress=False)
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
# WSOL benchmark (Choe et al., CVPR 2020) found its methods (HaS, ACoL, SPG, ADL, CutMix) within a
# few points of plain CAM. To compare for real, give the study more images, epochs and seeds, and
# run it on a GPU with ``spgkit run``; ``studies/methods.py`` compares the shipped methods.
#
# Keep it: a plugin distribution
# ------------------------------
#
# A file is the quickest way to try a head; a distribution is how a method is kept and shared:
# installed once, every study, the ``spgkit`` command and the test fixtures find it without ``-p``.
# It is the same module and one more file: a ``pyproject.toml`` whose entry point in the ``spgkit``
# group points at the module. That line is the whole of the wiring. The built-in plugins under
# ``plugins/`` (``spg``, ``acol``, ``has``, ``adl``, ``cutmix``) are laid out the same way.

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "spgkit-cutout"
version = "0.1.0"
description = "Cutout (DeVries & Taylor, 2017) as an spgkit head"
requires-python = ">=3.10"
dependencies = ["spgkit"]

[project.entry-points.spgkit]
cutout = "spgkit_cutout"

[tool.setuptools]
packages = ["spgkit_cutout"]
"""

# %%
# Install it
# ----------
#
# We write the two files into the temporary folder, the module as the package ``spgkit_cutout``, and
# ``pip install`` it. In your own project you
# would run ``pip install -e path/to/spgkit-cutout`` once and be done; here, so that building the
# documentation leaves your environment as it found it, pip installs into a throwaway folder
# (``--target``) that we then put on ``sys.path``. ``--no-build-isolation`` builds with the
# setuptools already installed and ``--no-index`` keeps pip off the network.
#
# Should pip be unable to build here (an environment without setuptools, say), the fallback writes
# by hand the two things an installer leaves behind that matter to spgkit: the package, and a
# ``.dist-info`` folder whose ``entry_points.txt`` carries the entry point. The standard library's
# :mod:`importlib.metadata`, which spgkit uses to find plugins, reads exactly that.

source = root / "spgkit-cutout"
(source / "spgkit_cutout").mkdir(parents=True)
(source / "pyproject.toml").write_text(PYPROJECT)
(source / "spgkit_cutout" / "__init__.py").write_text(MODULE)
site = root / "site-packages"

pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
pip += ["--disable-pip-version-check", "--quiet", "--target", str(site), str(source)]
result = subprocess.run(pip, capture_output=True, text=True)
if result.returncode == 0:
    print("installed with pip:", sorted(p.name for p in site.iterdir() if not p.name.startswith("__")))
else:
    print("pip could not install here, writing the dist-info by hand:", result.stderr.strip()[-300:])
    (site / "spgkit_cutout").mkdir(parents=True)
    (site / "spgkit_cutout" / "__init__.py").write_text(MODULE)
    info = site / "spgkit_cutout-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: spgkit-cutout\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[spgkit]\ncutout = spgkit_cutout\n")

# %%
# Discover it
# -----------
#
# The install folder goes on ``sys.path`` (a ``pip install`` into your environment would need no
# such step). A :class:`spgkit.plugins.Registry` built without any file then finds ``cutout``
# through the ``spgkit`` entry-point group, beside the built-in methods; so does ``spgkit heads``.
# (Had we passed ``cutout.py`` as well, the two would clash: a name registered twice fails, naming
# both the distribution and the file.)

sys.path.insert(0, str(site))
importlib.invalidate_caches()  # let the import system and importlib.metadata see the new folder

registry = Registry()
for name, entry in sorted(registry.heads.items()):
    where = f"{entry.obj.__module__}.{entry.obj.__qualname__}"
    print(f"{name:6} {where:24} from {entry.plugin}")

workdir.cleanup()

# %%
# What else a head can declare
# ----------------------------
#
# Cutout needed nothing beyond the images. Three more class attributes of
# :class:`~spgkit.heads.GuidanceHead` let a head reach further, each checked when the model is
# built (an unknown value is a :class:`~spgkit.plugins.HeadError` naming the head and its plugin):
#
# - ``needs_backbone``: what the head reads of the backbone besides its stage features,
#   ``("class_token", "attention")`` or either. The model then fills
#   :attr:`HeadContext.class_token <spgkit.heads.HeadContext.class_token>` ((N, C), after the last
#   block) and :attr:`HeadContext.attention <spgkit.heads.HeadContext.attention>` (one
#   (N, heads, T, T) softmax per block, token 0 the class token). A timm vision transformer
#   (``backbone="timm:deit_small_patch16_224"``) gives both, read through hooks where timm's own
#   ``AttentionExtract`` looks; a CNN gives neither, and a head that asks is refused with a
#   one-line error.
# - ``map_mode``: how the head's ``HeadOutput.map`` combines with the localization map:
#   ``"max"`` (the default: the element-wise max of the two, min-max normalised, as ACoL fuses its
#   second classifier), ``"multiply"`` (the product as it is) or ``"replace"``.
# - ``classifier_form``: the CAM classifier the method has: ``"spg"`` (SPG-A's A3 + A4, the
#   library's) or ``"conv3x3"`` (one 3x3 convolution to the classes, TS-CAM's).
#
# TS-CAM (``plugins/tscam``) uses all three in a dozen lines: it declares
# ``needs_backbone = ("attention",)``, ``map_mode = "multiply"`` and
# ``classifier_form = "conv3x3"``, and at evaluation only (``if self.training: return
# HeadOutput()``, as its reference computes its maps only there) returns the class token's
# attention to the patches, averaged over heads and summed over blocks, as its map::
#
#     attention = torch.stack(ctx.attention).mean(2).sum(0)  # (N, T, T)
#     h, w = ctx.classifier.cams.shape[-2:]
#     return HeadOutput(map=attention[:, 0, -h * w:].reshape(-1, 1, h, w))
