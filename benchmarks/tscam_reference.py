"""TS-CAM side by side with its authors' code: the same DeiT weights and batch through the
reference's ``deit_tscam_small_patch16_224`` (github:vasgaowei/TS-CAM, ``lib/models/deit.py``, run
as it is from a local checkout that is never shipped with spgkit) and through spgkit's
``timm:deit_small_patch16_224`` with ``final_norm`` and the ``tscam`` head; prints the largest
differences of their logits (eval and train mode), token-coupled maps and a training step's loss.

No DeiT ImageNet weights install offline, so both models hold the reference's own initialisation
perturbed by Gaussian noise (std ``--noise``), which makes the attention far from uniform; the
script prints how far (the class token's largest attention to a patch, summed over blocks).

    python benchmarks/tscam_reference.py --reference /path/to/TS-CAM [--classes 200 --batch-size 4]

The only shims are for imports: the reference's ``lib`` goes on ``sys.path``; it imports against
timm 1.x through timm's own deprecated-module shims (``timm.models.layers`` and friends, which warn).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from spgkit.model import HeadSpec, build_model  # noqa: E402
from spgkit.plugins import Registry, get_plugin_manager  # noqa: E402


def reference_model(checkout: Path, num_classes: int) -> torch.nn.Module:
    """The reference's DeiT-S TS-CAM model as its code builds it (no weights: none offline)."""
    lib = checkout / "lib"
    if not (lib / "models" / "deit.py").is_file():
        raise SystemExit(f"{checkout}: not a checkout of vasgaowei/TS-CAM (no lib/models/deit.py)")
    sys.path.insert(0, str(lib))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecation and registry-overwrite warnings
        from models.deit import deit_tscam_small_patch16_224
    return deit_tscam_small_patch16_224(pretrained=False, num_classes=num_classes)


def ours(num_classes: int) -> torch.nn.Module:
    import spgkit_tscam

    pm = get_plugin_manager(autoload=False)
    pm.register(spgkit_tscam, name="tscam (spgkit-tscam)")
    return build_model(
        num_classes, [HeadSpec("tscam")], backbone="timm:deit_small_patch16_224",
        backbone_args={"final_norm": True}, registry=Registry(pm),
    )  # fmt: skip


def copy_weights(reference: torch.nn.Module, model: torch.nn.Module, noise: float) -> None:
    """The reference's weights plus noise, into both models; TS-CAM's head is spgkit's A4."""
    generator = torch.Generator().manual_seed(0)
    state = {k: v + noise * torch.randn(v.shape, generator=generator) for k, v in reference.state_dict().items()}
    reference.load_state_dict(state)
    mapped = {("classifier.a4." + k[5:]) if k.startswith("head.") else f"backbone.net.model.{k}": v for k, v in state.items()}
    odd = set(mapped) ^ set(model.state_dict())
    if odd:
        raise SystemExit(f"the reference's model and spgkit's hold different tensors: {sorted(odd)[:5]}")
    model.load_state_dict(mapped)


def compare(reference, model, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Largest absolute differences of what the two compute on one batch."""
    num_classes = reference.num_classes
    with torch.no_grad():
        logits_ref, cams_ref = reference.eval()(images, return_cam=True)
        out = model.eval()(images, classes=labels)
        maps = torch.stack([model.localization_maps(out, torch.full_like(labels, k)) for k in range(num_classes)], 1)
        attention = out.heads["tscam"].exports["attention"]
    reference.train(), model.train()
    loss_ref = F.cross_entropy(reference(images), labels)
    loss = model.losses(model(images, labels), labels)["ce"]
    loss_ref.backward(), loss.backward()
    grad_ref = reference.head.weight.grad
    grad = model.classifier.a4.weight.grad
    return {
        "logits (eval)": (logits_ref - out.logits).abs().max().item(),
        "maps, all classes": (cams_ref - maps).abs().max().item(),
        "maps / their largest value": ((cams_ref - maps).abs().max() / cams_ref.abs().max()).item(),
        "training loss": (loss_ref - loss).abs().item(),
        "head weight gradient": (grad_ref - grad).abs().max().item(),
        "largest value of the maps": cams_ref.abs().max().item(),
        "class token's largest summed attention to a patch": attention.amax().item(),
        "its smallest": attention.amin().item(),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, metavar="PATH", help="a checkout of vasgaowei/TS-CAM")
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.1, help="std of the noise added to the reference's initial weights")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    reference = reference_model(Path(args.reference), args.classes)
    model = ours(args.classes)
    copy_weights(reference, model, args.noise)
    images = torch.randn(args.batch_size, 3, 224, 224)
    labels = torch.randint(0, args.classes, (args.batch_size,))
    print(f"TS-CAM DeiT-S, {args.classes} classes, batch {args.batch_size} of 224-pixel images, torch {torch.__version__}")
    for name, value in compare(reference, model, images, labels).items():
        print(f"  {name:52s} {value:.3g}")


if __name__ == "__main__":
    main()
