"""Score localization maps made by any code: what ``spgkit score`` runs.

The maps come from a folder of ``.npy`` files or from one ``.npz`` file, keyed by the image id
every spgkit dataset gives its samples (``sample["image_id"]``): the map of image ``ID`` is
``FOLDER/ID.npy`` (an id with slashes lives in subfolders) or the entry ``ID`` of the ``.npz``.
The ids are the reader's own: the path under ``images/`` for CUB
(``001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg``), the ``image_ids.txt`` entry
for the WSOL benchmark's metadata, the file name for ImageNet validation (``<wnid>/<file name>``
for training) and Tiny ImageNet, the image path in the CSV for ``folder_csv``, the file stem for
Oxford-IIIT Pet, ``synthwsol/<split>/<index>`` for SynthWSOL.

Each map is a 2-D array of any size, the map of the image's ground-truth class (GT-known, as
:func:`~spgkit.evaluate.evaluate` scores a model): it is cast to float32, resized to the
evaluation image size and normalised by :func:`~spgkit.localization.score_maps` in the chosen
protocol, then counted by :class:`~spgkit.evaluate.Scores`, the very steps ``spgkit evaluate``
takes with a model's maps. Optional logits, 1-D class scores stored the same way, add top-1 and
top-5 accuracy and Top-1/Top-5 Loc.

A map whose float32 cast would lose it (values beyond 2**64 in magnitude, which overflow in the
resize or the cast; a range below 2**-64, which underflows; a float64 map whose range is below
2**-12 of its magnitude, which the cast quantises) is first min-max normalised in float64, then
cast: normalisation is what the protocol applies anyway, and it is scale invariant, so a map times
1e300 or 1e-50 scores as the map itself. Every other map, every float32 map of ordinary range
included, is cast as is, so its numbers are bit for bit those it always gave.

GT-known, Top-1 and Top-5 Loc are taken at a CAM threshold, which must be chosen on held-out data
(a run chooses it on its selection split); without one (``cam_threshold=None``, the default)
they are left out and the threshold-free metrics (MaxBoxAcc, MaxBoxAccV2, PxAP) are reported.

:func:`center_baseline` scores one centred Gaussian map for every image through the same path:
the WSOL benchmark's centre baseline, the floor any method must clear.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from spgkit.data import collate
from spgkit.data.base import RecordDataset
from spgkit.data.diagnostics import diagnostics_of
from spgkit.evaluate import Scores
from spgkit.localization import score_maps as resize_and_normalize

SHOWN = 3
"""How many ids an error message lists."""

#: Beyond these magnitudes (of a map's values, of its range) float32 arithmetic is unsafe: the
#: resize's overshoot or the cast overflows, or the range underflows towards subnormals.
HUGE, TINY = 2.0**64, 2.0**-64
#: A float64 map whose range is below this share of its magnitude is quantised by the float32 cast.
RELATIVE_RANGE = 2.0**-12

#: The centre baseline's standard deviation, as a share of each side of the (square) image.
CENTER_SIGMA = 0.25


def as_float32_map(array: np.ndarray) -> np.ndarray:
    """A finite 2-D map as the float32 array the resize and normalisation work on.

    Cast as is when float32 holds it faithfully (bit for bit what spgkit always did); otherwise
    (magnitude above :data:`HUGE`, range below :data:`TINY`, or a non-float32 map whose range is
    below :data:`RELATIVE_RANGE` of its magnitude) min-max normalised in float64 first, which
    the protocol's own normalisation makes a no-op up to rounding: the metrics are scale invariant.
    A flat map too large for float32 becomes zeros, as every flat map is normalised to.
    """
    wide = np.asarray(array, dtype=np.float64)
    low, high = float(wide.min()), float(wide.max())
    span, magnitude = high - low, max(abs(low), abs(high))
    faithful = magnitude <= HUGE and (
        span == 0 or (span >= TINY and (array.dtype == np.float32 or span >= magnitude * RELATIVE_RANGE))
    )
    if faithful:
        return np.asarray(array, dtype=np.float32)
    if span == 0:
        return np.zeros(wide.shape, dtype=np.float32)
    return ((wide - low) / span).astype(np.float32)


def _some(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:SHOWN])
    return shown + (", ..." if len(ids) > SHOWN else "")


class ArrayStore:
    """Arrays keyed by image id: a folder of ``<id>.npy`` files, or one ``.npz`` file.

    Reading is lazy (an ``.npz`` is read entry by entry), so a store as large as ImageNet's
    validation maps never sits in memory at once. Every error is a ValueError naming the file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise ValueError(f"{self.path}: no such file or folder")
        if self.path.is_dir():
            self.files = {f.relative_to(self.path).as_posix()[: -len(".npy")]: f for f in self.path.rglob("*.npy")}
            self.npz = None
        elif self.path.suffix == ".npz":
            try:
                self.npz = np.load(self.path, allow_pickle=False)
            except (OSError, ValueError, zipfile.BadZipFile) as error:
                raise ValueError(f"{self.path}: not a readable .npz file ({error})") from None
            self.files = {key: self.path for key in self.npz.files}
        else:
            raise ValueError(f"{self.path}: expected a folder of .npy files or an .npz file")
        if not self.files:
            raise ValueError(f"{self.path}: no arrays in it (expected <image id>.npy files or .npz entries)")

    def where(self, key: str) -> str:
        """The file (and ``.npz`` entry) holding ``key``, for messages."""
        return f"{self.path}[{key!r}]" if self.npz is not None else str(self.files[key])

    def expected(self) -> str:
        """How the store names an image, for messages."""
        return "entries named by image id" if self.npz is not None else f"files {self.path}/<image id>.npy"

    def load(self, key: str, ndim: int) -> np.ndarray:
        """The non-empty, finite, ``ndim``-dimensional numeric array stored under ``key``."""
        where = self.where(key)
        try:
            array = self.npz[key] if self.npz is not None else np.load(self.files[key], allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"{where}: not a readable array ({error})") from None
        if array.ndim != ndim or array.size == 0:
            raise ValueError(f"{where}: expected a non-empty {ndim}-D array, got shape {array.shape}")
        if array.dtype.kind not in "iuf":
            raise ValueError(f"{where}: expected numbers, got dtype {array.dtype}")
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: contains NaN or infinite values")
        return array

    def check_keys(self, ids: list[str], what: str) -> None:
        """ValueError unless the store holds exactly one array per id of ``ids``."""
        missing = [i for i in ids if i not in self.files]
        if missing:
            raise ValueError(
                f"{self.path}: no array for {len(missing)} of the {len(ids)} images of {what}: "
                f"{_some(missing)} (expected {self.expected()})"
            )
        extra = sorted(self.files.keys() - set(ids))
        if extra:
            raise ValueError(f"{self.path}: {len(extra)} array(s) name no image of {what}: {_some(extra)}")


def image_ids(dataset: Dataset) -> list[str]:
    """Every image id of ``dataset``, in order. File readers know them from their parsed
    annotations; any other dataset (SynthWSOL, a plugin's reader) is read sample by sample."""
    if isinstance(dataset, RecordDataset):
        return [record.image_id for record in dataset.records]
    return [dataset[index]["image_id"] for index in range(len(dataset))]


def score(
    dataset: Dataset,
    maps: str | Path,
    logits: str | Path | None = None,
    *,
    what: str = "the dataset",
    batch_size: int = 64,
    thresholds: int = 100,
    cam_threshold: float | None = None,
    protocol: str = "benchmark",
    progress: bool = False,
) -> dict[str, float]:
    """Every metric of :func:`~spgkit.evaluate.evaluate` for the maps stored at ``maps`` (and the
    class scores at ``logits``) on ``dataset``, read through
    :func:`~spgkit.data.eval_transform` at the evaluation image size.

    ``cam_threshold`` (chosen on held-out data, never on the split scored) adds GT-known, Top-1
    and Top-5 Loc; None leaves them out. ``what`` names the dataset in error messages. Raises
    ValueError, naming the file, when an image has no map (or no logits), an array names no
    image, a map is not a non-empty finite 2-D array, a logits vector has not one score per
    class, or a file cannot be read.
    """
    ids = image_ids(dataset)
    map_store = ArrayStore(maps)
    map_store.check_keys(ids, what)
    return score_maps_of(
        dataset,
        lambda image_id, size: map_store.load(image_id, ndim=2),
        None if logits is None else _logits_reader(ArrayStore(logits), ids, dataset.num_classes, what),
        batch_size=batch_size,
        thresholds=thresholds,
        cam_threshold=cam_threshold,
        protocol=protocol,
        progress=progress,
    )


def _logits_reader(store: ArrayStore, ids: list[str], classes: int, what: str) -> Callable[[str], np.ndarray]:
    """The logits of an image id, read from ``store`` once it is known to hold one vector per id
    of ``ids``; each is checked to hold one score per class of ``what`` when read."""
    store.check_keys(ids, what)

    def logits_of(image_id: str) -> np.ndarray:
        vector = store.load(image_id, ndim=1)
        if len(vector) != classes:
            raise ValueError(f"{store.where(image_id)}: {len(vector)} class scores, but {what} has {classes} classes")
        return vector

    return logits_of


def score_maps_of(
    dataset: Dataset,
    map_of: Callable[[str, tuple[int, int]], np.ndarray],
    logits_of: Callable[[str], np.ndarray] | None = None,
    *,
    batch_size: int = 64,
    thresholds: int = 100,
    cam_threshold: float | None = None,
    protocol: str = "benchmark",
    progress: bool = False,
    desc: str = "score",
) -> dict[str, float]:
    """The metrics of the maps ``map_of(image_id, (H, W))`` gives (finite 2-D arrays of any
    size; ``(H, W)`` is the evaluation image size) and the logits ``logits_of(image_id)`` gives,
    on ``dataset``: the path :func:`score` and :func:`center_baseline` share."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    scores = Scores(thresholds, cam_threshold, protocol, diagnostics=diagnostics_of(dataset))
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        size = tuple(batch["images"].shape[-2:])
        # One map at a time: maps may differ in size. As a float32 tensor, as the model's maps are
        # in evaluate, so the resize and normalisation run the same kernels and give the same bits.
        resized = [
            resize_and_normalize(torch.from_numpy(as_float32_map(map_of(i, size)))[None], size, protocol)
            for i in batch["image_ids"]
        ]
        batch_logits = None
        if logits_of is not None:
            batch_logits = torch.from_numpy(np.stack([logits_of(i) for i in batch["image_ids"]]))
        scores.update(batch, torch.cat(resized), batch_logits)
    return scores.compute()


def center_gaussian(size: tuple[int, int], sigma: float = CENTER_SIGMA) -> np.ndarray:
    """An isotropic Gaussian centred on a ``size = (H, W)`` map, float32, peak 1: pixel
    ``(y, x)`` (centres at ``+ 0.5``) scores ``exp(-(dx**2 + dy**2) / 2)`` with ``dx = (x + 0.5 -
    W / 2) / (sigma * W)`` and ``dy`` alike, so on a square image its level sets are circles."""
    height, width = size
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, not {sigma}")
    dy = (np.arange(height) + 0.5 - height / 2) / (sigma * height)
    dx = (np.arange(width) + 0.5 - width / 2) / (sigma * width)
    return np.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / 2).astype(np.float32)


def center_baseline(
    dataset: Dataset,
    *,
    thresholds: int = 100,
    cam_threshold: float | None = None,
    protocol: str = "benchmark",
    batch_size: int = 64,
    sigma: float = CENTER_SIGMA,
    progress: bool = False,
) -> dict[str, float]:
    """The centre baseline: the metrics of one centred Gaussian map (:func:`center_gaussian`),
    the same for every image of ``dataset``, scored by exactly the path of :func:`score` (the
    samples read through :func:`~spgkit.data.eval_transform`, so the map is made at their size).
    It uses no pixel, so a method that does not beat it has learnt nothing about where objects
    are beyond "near the middle".

    The WSOL benchmark's paper (Choe et al., "Evaluation for WSOL: protocol, metrics and
    datasets", TPAMI) reports a centre-Gaussian baseline beside its tables, but its released
    code holds no such baseline and its standard deviation could not be verified here; spgkit's
    choice is ``sigma = CENTER_SIGMA = 1/4`` of each side. The threshold-free metrics hardly
    depend on it: the sweep over thresholds passes through the same nested centred circles for
    any sigma (only which threshold reaches which circle changes, within the grid's steps);
    GT-known Loc at a fixed ``cam_threshold`` does depend on it.

    Without ``cam_threshold`` (the default) GT-known Loc is left out, as :func:`score` does. To
    put one beside a study's table, choose it as runs do: the ``maxboxacc_threshold`` of the
    baseline on the selection split, then score the test split at it. No logits: no accuracy,
    no Top-1/Top-5 Loc. Returns the metrics dict of :func:`score`.
    """
    maps: dict[tuple[int, int], np.ndarray] = {}

    def map_of(image_id: str, size: tuple[int, int]) -> np.ndarray:
        if size not in maps:
            maps[size] = center_gaussian(size, sigma)
        return maps[size]

    return score_maps_of(
        dataset, map_of, None, batch_size=batch_size, thresholds=thresholds, cam_threshold=cam_threshold,
        protocol=protocol, progress=progress, desc="centre baseline",
    )  # fmt: skip
