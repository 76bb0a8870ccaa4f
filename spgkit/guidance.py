"""Self-produced guidance: seed masks {0, 1, 255} from score maps, and the masked BCE.

Shared by every head that supervises a map with a map; the maps' min-max normalisation and
bilinear resize (:func:`minmax_normalize`, :func:`upsample`) live with the localization maps and
are imported here for the heads. Everything here is vectorised over the batch
(no per-image Python loop, no host-device synchronisation), and masks are built under
``torch.no_grad`` so they never carry gradient.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from spgkit.localization.maps import minmax_normalize, upsample

Array = np.ndarray | torch.Tensor

#: Seed-mask value for pixels that are neither object nor background (left out of the loss).
IGNORE = 255


@torch.no_grad()
def seed_mask(
    scores: torch.Tensor,
    delta_h: float,
    delta_l: float,
    min_pixels: int = 30,
    fallback_ratio: float = 0.7,
) -> torch.Tensor:
    """Seed mask from (N, H, W) scores in [0, 1]: 1 where > delta_h, 0 where < delta_l, else 255.

    Where fewer than ``min_pixels`` pixels of an image pass ``delta_h``, that image uses
    ``fallback_ratio * max(scores)`` as its delta_h (the public SPG code's rule). Object pixels are
    marked first and background second, so where the fallback threshold falls below ``delta_l``
    background wins, as in both reference codes. NaN scores stay ignored. Returns uint8.
    """
    n = scores.shape[0]
    flat = scores.reshape(n, -1)
    enough = (flat > delta_h).sum(1) >= min_pixels
    high = torch.where(enough, torch.full_like(flat[:, 0], delta_h), fallback_ratio * flat.amax(1))
    mask = torch.full_like(flat, IGNORE, dtype=torch.uint8)
    mask[flat > high[:, None]] = 1
    mask[flat < delta_l] = 0
    return mask.view(scores.shape)


@torch.no_grad()
def seed_stats(name: str, seed: torch.Tensor, scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a seed mask holds, for the training log: the shares of object, background and ignored
    pixels over the batch (``<name>_object``, ``_background``, ``_ignored``) and the mean of the
    score map it was taken from (``<name>_score``; NaN scores of flat maps left out). Scalar
    tensors, so logging them costs no host synchronisation."""
    return {
        f"{name}_object": (seed == 1).float().mean(),
        f"{name}_background": (seed == 0).float().mean(),
        f"{name}_ignored": (seed == IGNORE).float().mean(),
        f"{name}_score": scores.float().nanmean(),
    }


def masked_bce(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits over the pixels whose mask is not 255.

    ``logits`` (N, 1, h, w) or (N, h, w) are upsampled to the mask's (N, H, W) size (the reference
    codes upsample the raw logits first; pass them at mask size to reuse that upsampling). The mean
    runs over all valid pixels of the batch; a batch with none gives 0 (the references give NaN),
    without a host synchronisation.
    """
    if logits.dim() == 4:
        logits = logits[:, 0]
    logits = upsample(logits, tuple(mask.shape[-2:]))
    valid = mask != IGNORE
    target = (mask == 1).to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    # where, not a product: an ignored pixel with an infinite loss must not turn the sum into NaN
    # (the references leave ignored pixels out by indexing).
    return torch.where(valid, loss, 0).sum() / valid.sum().clamp_min(1)


def class_maps(cams: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Pick each image's map of one class: (N, K, h, w), (N,) -> (N, h, w)."""
    return cams[torch.arange(cams.shape[0], device=cams.device), classes]
