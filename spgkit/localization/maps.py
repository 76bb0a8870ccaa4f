"""Localization maps before thresholding: checks, per-image min-max normalisation, resizing, and the
WSOL benchmark's uint8 levels and integer cuts, the building blocks of
:class:`~spgkit.localization.protocol.Protocol`.

The map functions take a numpy array or a torch tensor and return the same kind. Floating maps keep
their dtype when it is float32 or float64 (the WSOL benchmark works on float32 maps, and its uint8
conversion depends on the dtype); any other dtype is converted to float32 first.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

Array = np.ndarray | torch.Tensor


def minmax_normalize(maps: Array, flat: float = 0.0) -> Array:
    """Min-max normalise each map over its last two dimensions to [0, 1]: ``(m - min) / (max - min)``,
    in the maps' dtype, numpy or torch: the one normalisation every part of spgkit uses. The WSOL
    benchmark computes exactly this in float32.

    A flat map has no scale and becomes ``flat`` everywhere: 0 (no object evidence) by default;
    NaN makes a seed taken from it all ignored, which is what the reference codes' unguarded
    division leads to.
    """
    if isinstance(maps, torch.Tensor):
        low, high = maps.amin((-2, -1), keepdim=True), maps.amax((-2, -1), keepdim=True)
        span = high - low
        return torch.where(span == 0, flat, (maps - low) / torch.where(span == 0, 1, span))
    # numpy: the flat maps alone overwritten, not a third pass over all (the CPU evaluator's cost).
    low, high = maps.min((-2, -1), keepdims=True), maps.max((-2, -1), keepdims=True)
    span = high - low
    out = (maps - low) / np.where(span == 0, 1, span)
    if (span == 0).any():
        out[np.broadcast_to(span == 0, out.shape)] = flat
    return out


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize (N, h, w) or (N, C, h, w) maps to ``size`` (``align_corners=False``, as
    ``nn.Upsample(mode="bilinear")`` in the reference codes); the one bilinear resize spgkit uses."""
    squeeze = maps.dim() == 3
    x = maps.unsqueeze(1) if squeeze else maps
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return x.squeeze(1) if squeeze else x


def as_numpy(x) -> np.ndarray:
    """``x`` as a numpy array: a tensor is detached and brought to the CPU (no copy for a CPU
    tensor); anything else goes through ``np.asarray``. Where tensors or arrays come in."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def as_float_maps(maps: Array, what: str = "maps") -> Array:
    """Return ``maps`` as a float32/float64 (N, H, W) batch; (H, W) becomes a batch of one.

    Raises ValueError for other shapes and for NaN or infinite values, naming the first bad image.
    """
    if isinstance(maps, torch.Tensor):
        if maps.dtype not in (torch.float32, torch.float64):
            maps = maps.float()
        finite = torch.isfinite(maps)
    else:
        maps = np.asarray(maps)
        if maps.dtype not in (np.float32, np.float64):
            maps = maps.astype(np.float32)
        finite = np.isfinite(maps)
    if maps.ndim == 2:
        maps, finite = maps[None], finite[None]
    if maps.ndim != 3:
        raise ValueError(f"{what} must have shape (N, H, W) or (H, W), not {tuple(maps.shape)}")
    if maps.shape[1] == 0 or maps.shape[2] == 0:
        raise ValueError(f"{what} must not be empty, got shape {tuple(maps.shape)}")
    bad = ~finite.reshape(len(maps), maps.shape[1] * maps.shape[2]).all(1)
    if bad.any():
        index = int(bad.nonzero()[0][0]) if isinstance(bad, np.ndarray) else int(bad.nonzero()[0, 0])
        raise ValueError(f"{what}[{index}] contains NaN or infinite values")
    return maps


def normalize_maps(maps: Array) -> Array:
    """Min-max normalise each map of a (N, H, W) or (H, W) batch to [0, 1].

    Each map becomes ``(m - min) / (max - min)``, computed in the map's dtype exactly as the WSOL
    benchmark does. A constant map has no scale and becomes all zeros (the benchmark's choice too),
    so it never produces NaN. NaN or infinite inputs raise ValueError.
    """
    maps = maps if isinstance(maps, torch.Tensor) else np.asarray(maps)
    out = minmax_normalize(as_float_maps(maps))
    return out[0] if maps.ndim == 2 else out


def resize_maps(maps: Array, size: tuple[int, int]) -> Array:
    """Resize a (N, H, W) or (H, W) batch of maps to ``size = (height, width)``, bilinearly
    (:func:`upsample`); numpy in, numpy out. Resize raw maps before normalising
    them: interpolation does not preserve min and max."""
    is_numpy = not isinstance(maps, torch.Tensor)
    maps = np.asarray(maps) if is_numpy else maps
    squeeze = maps.ndim == 2
    tensor = torch.from_numpy(np.ascontiguousarray(as_float_maps(maps))) if is_numpy else as_float_maps(maps)
    out = upsample(tensor, tuple(size))
    out = out.numpy() if is_numpy else out
    return out[0] if squeeze else out


def benchmark_uint8(normalized: np.ndarray) -> np.ndarray:
    """The WSOL benchmark's uint8 image of a normalised map: ``(map * 255).astype(uint8)``
    (truncation, in the map's dtype)."""
    return (normalized * 255).astype(np.uint8)


def benchmark_cuts(thresholds, uint8_max) -> np.ndarray:
    """Integer cut of each threshold in the WSOL benchmark: ``int(tau * max(uint8 map))``; the
    foreground is then ``uint8 map > cut`` (cv2.THRESH_BINARY). Either argument may be an array."""
    return np.floor(np.asarray(thresholds, dtype=np.float64) * np.asarray(uint8_max, dtype=np.float64)).astype(np.int64)
