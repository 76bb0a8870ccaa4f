"""The WSOL benchmark's own Inception-V3 models (github:clovaai/wsolevaluation), read from a local
checkout that is never shipped with spgkit, with spgkit's models given the same weights: what
``throughput.py --reference`` times side by side.

The benchmark names its classifier layers after SPG (``SPG_A3_1b`` ...) in its CAM and SPG models,
and ``classifier_A``/``classifier_B`` in its ACoL model; the backbone's names are timm's, as ours.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
from torch import nn

from spgkit.model import WSOLModel

#: The benchmark's layer (a Sequential's conv or a bare conv) -> spgkit's, per method.
_CLASSIFIER = {"SPG_A3_1b.0": "classifier.a3.1", "SPG_A3_2b.0": "classifier.a3.4", "SPG_A4": "classifier.a4"}
LAYERS = {
    "cam": _CLASSIFIER,
    "spg": {
        **_CLASSIFIER,
        "SPG_B_1a.0": "heads.spg_b.b1_first.0", "SPG_B_2a.0": "heads.spg_b.b2_first.0",
        "SPG_B_shared.0": "heads.spg_b.b1_second.0", "SPG_B_shared.2": "heads.spg_b.b1_out",
        "SPG_C.0": "heads.spg_c.layers.0.0", "SPG_C.2": "heads.spg_c.layers.1",
    },
    "acol": {
        "classifier_A.0": "classifier.a3.1", "classifier_A.2": "classifier.a3.4", "classifier_A.4": "classifier.a4",
        "classifier_B.0": "heads.acol.classifier_b.a3.1", "classifier_B.2": "heads.acol.classifier_b.a3.4",
        "classifier_B.4": "heads.acol.classifier_b.a4",
    },
}  # fmt: skip
_MODELS = {"cam": "InceptionCam", "spg": "InceptionSpg", "acol": "InceptionAcol"}
#: The benchmark's defaults for Inception-V3 (its config.py and the SPG paper).
SPG_THRESHOLDS = ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1))
ACOL_THRESHOLD = 0.7


def _import(checkout: Path, module: str):
    if not (checkout / "wsol" / "inception.py").is_file():
        raise SystemExit(f"{checkout}: not a checkout of clovaai/wsolevaluation (no wsol/inception.py)")
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    return importlib.import_module(module)


def reference_model(checkout: Path, method: str, num_classes: int, large_feature_map: bool) -> nn.Module:
    """The benchmark's Inception-V3 model of ``method`` (cam, spg or acol), freshly initialised."""
    inception = _import(checkout, "wsol.inception")
    cls = getattr(inception, _MODELS[method])
    return cls(num_classes=num_classes, large_feature_map=large_feature_map, acol_drop_threshold=ACOL_THRESHOLD)


def reference_loss(checkout: Path, method: str, output: dict, labels: torch.Tensor) -> torch.Tensor:
    """The loss the benchmark's training loop (main.py, ``_wsol_training``) takes for ``method``."""
    if method == "cam":
        return nn.functional.cross_entropy(output["logits"], labels)
    module = _import(checkout, f"wsol.method.{method}")
    return module.get_loss(output, labels, spg_thresholds=SPG_THRESHOLDS)


def copy_weights(reference: nn.Module, method: str, ours: WSOLModel) -> None:
    """Load the reference model's weights (and batch-norm statistics) into ``ours``; exits if the
    two do not hold the same tensors."""
    mapping = LAYERS[method]
    state = {}
    for key, value in reference.state_dict().items():
        layer, leaf = key.rsplit(".", 1)
        state[f"backbone.{key}" if key.startswith(("Conv2d", "Mixed")) else f"{mapping[layer]}.{leaf}"] = value
    for key in ours.state_dict():  # shared SPG-B layers: B2 holds B1's tensors under its own names
        if key not in state and key.startswith("heads.spg_b.b2_"):
            state[key] = state[key.replace("b2_second", "b1_second").replace("b2_out", "b1_out")]
    odd = set(state) ^ set(ours.state_dict())
    if odd:
        raise SystemExit(f"the reference's {method} model and spgkit's differ in {sorted(odd)[:5]}")
    ours.load_state_dict(state)
