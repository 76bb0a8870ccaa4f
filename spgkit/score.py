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
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from spgkit.data import collate
from spgkit.data.base import RecordDataset
from spgkit.evaluate import Scores
from spgkit.localization import score_maps as resize_and_normalize

SHOWN = 3
"""How many ids an error message lists."""


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
    cam_threshold: float = 0.2,
    protocol: str = "benchmark",
    progress: bool = False,
) -> dict[str, float]:
    """Every metric of :func:`~spgkit.evaluate.evaluate` for the maps stored at ``maps`` (and the
    class scores at ``logits``) on ``dataset``, read through
    :func:`~spgkit.data.eval_transform` at the evaluation image size.

    ``what`` names the dataset in error messages. Raises ValueError, naming the file, when an
    image has no map (or no logits), an array names no image, a map is not a non-empty finite 2-D
    array, a logits vector has not one score per class, or a file cannot be read.
    """
    ids = image_ids(dataset)
    map_store = ArrayStore(maps)
    map_store.check_keys(ids, what)
    logit_store = None
    if logits is not None:
        logit_store = ArrayStore(logits)
        logit_store.check_keys(ids, what)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    scores = Scores(thresholds, cam_threshold, protocol)
    for batch in tqdm(loader, desc="score", disable=not progress, leave=False):
        size = tuple(batch["images"].shape[-2:])
        # One map at a time: maps may differ in size. As a float32 tensor, as the model's maps are
        # in evaluate, so the resize and normalisation run the same kernels and give the same bits.
        resized = [
            resize_and_normalize(torch.from_numpy(map_store.load(i, ndim=2)).float()[None], size, protocol)
            for i in batch["image_ids"]
        ]
        batch_logits = None
        if logit_store is not None:
            vectors = [logit_store.load(i, ndim=1) for i in batch["image_ids"]]
            for i, vector in zip(batch["image_ids"], vectors):
                if len(vector) != dataset.num_classes:
                    raise ValueError(f"{logit_store.where(i)}: {len(vector)} class scores, but {what} has {dataset.num_classes} classes")
            batch_logits = torch.from_numpy(np.stack(vectors))
        scores.update(batch, np.concatenate([np.asarray(m) for m in resized]), batch_logits)
    return scores.compute()
