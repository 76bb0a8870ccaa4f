"""Localization maps before thresholding: checks, per-image min-max normalisation, resizing, and the
integer levels that thresholds compare against.

Every function takes a numpy array or a torch tensor and returns the same kind. Floating maps keep
their dtype when it is float32 or float64 (the WSOL benchmark works on float32 maps, and its uint8
conversion depends on the dtype); any other dtype is converted to float32 first.
"""

from __future__ import annotations

import numpy as np
import torch

from spgkit.config import PROTOCOLS
from spgkit.guidance import minmax_normalize, upsample

Array = np.ndarray | torch.Tensor

def check_protocol(protocol: str) -> str:
    """``protocol`` if it names one of :data:`PROTOCOLS`; ValueError otherwise."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; use one of {sorted(PROTOCOLS)}")
    return protocol


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
    (:func:`spgkit.guidance.upsample`); numpy in, numpy out. Resize raw maps before normalising
    them: interpolation does not preserve min and max."""
    is_numpy = not isinstance(maps, torch.Tensor)
    maps = np.asarray(maps) if is_numpy else maps
    squeeze = maps.ndim == 2
    tensor = torch.from_numpy(np.ascontiguousarray(as_float_maps(maps))) if is_numpy else as_float_maps(maps)
    out = upsample(tensor, tuple(size))
    out = out.numpy() if is_numpy else out
    return out[0] if squeeze else out


def score_maps(maps: Array, size: tuple[int, int], protocol: str = "benchmark") -> Array:
    """Localization maps at feature resolution, (N, h, w), as maps in [0, 1] at ``size = (H, W)``.

    ``"benchmark"``: each map resized with ``cv2.resize(..., INTER_CUBIC)`` in float32, then
    min-max normalised, a map with NaN or no range becoming zeros: the WSOL benchmark's
    ``CAMComputer`` step for step; returns numpy. ``"float"``: resized bilinearly
    (:func:`resize_maps`), then min-max normalised; returns the input's kind (a CUDA tensor stays
    on its device).
    """
    if check_protocol(protocol) == "float":
        return minmax_normalize(as_float_maps(resize_maps(maps, size)))
    import cv2  # the benchmark's own interpolation; torch's bicubic differs in the last bits

    maps = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    maps = maps.astype(np.float32, copy=False)
    height, width = size
    out = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_CUBIC) for m in maps.reshape(-1, *maps.shape[-2:])])
    nan = np.isnan(out).any(axis=(1, 2))
    out[nan] = 0
    return minmax_normalize(out)


def foreground(maps: np.ndarray, threshold: float, protocol: str = "benchmark") -> np.ndarray:
    """The pixels a threshold keeps of normalised (N, H, W) maps, as the protocol defines them:
    ``uint8 map > int(threshold * max(uint8 map))`` (benchmark) or ``map >= threshold`` (float)."""
    maps = np.asarray(maps)
    if check_protocol(protocol) == "float":
        return maps >= threshold
    levels = benchmark_uint8(maps)
    cuts = benchmark_cuts(threshold, levels.reshape(len(levels), -1).max(axis=1))
    return levels > cuts[:, None, None]


def benchmark_uint8(normalized: np.ndarray) -> np.ndarray:
    """The WSOL benchmark's uint8 image of a normalised map: ``(map * 255).astype(uint8)``
    (truncation, in the map's dtype)."""
    return (normalized * 255).astype(np.uint8)


def benchmark_cuts(thresholds, uint8_max) -> np.ndarray:
    """Integer cut of each threshold in the WSOL benchmark: ``int(tau * max(uint8 map))``; the
    foreground is then ``uint8 map > cut`` (cv2.THRESH_BINARY). Either argument may be an array."""
    return np.floor(np.asarray(thresholds, dtype=np.float64) * np.asarray(uint8_max, dtype=np.float64)).astype(np.int64)


def threshold_levels(normalized: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Number of (ascending) thresholds at or below each pixel: pixel ``p`` is in the foreground of
    threshold ``j`` (``map >= thresholds[j]``) exactly when its level exceeds ``j``."""
    return np.searchsorted(thresholds, normalized, side="right")
