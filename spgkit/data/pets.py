"""The Oxford-IIIT Pet dataset, localized by its pixel trimaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spgkit.boxes import mask_box
from spgkit.data.base import (
    BadLine,
    PathArg,
    Problems,
    Record,
    RecordDataset,
    Size,
    Transform,
    check_choice,
    label_table,
    list_images,
    load_label_map,
    parse_int,
    read_size,
    read_table,
)
from spgkit.data.sample import DataError

SPLITS = ("trainval", "test", "all")
BORDERS = ("ignore", "object")
PET, BACKGROUND, BORDER = 1, 2, 3
"""Trimap values."""
NUM_BREED_IDS = 37


class OxfordPets(RecordDataset):
    """Oxford-IIIT Pet (Parkhi et al., 2012) with whole-object masks and boxes from the trimaps.

    ``root`` is the ``oxford-iiit-pet`` directory::

        images/<Breed>_<n>.jpg
        annotations/trimaps/<Breed>_<n>.png      1 pet, 2 background, 3 border
        annotations/trainval.txt, test.txt       "<image> <class id> <species> <breed id>"

    The class of an image is the breed in its file name (``american_bulldog_12`` ->
    ``american_bulldog``). Labels rank the breeds present in ``images/`` by name, ignoring case
    (the dataset's own id order), so every split shares one label space and a 3-breed subset gets
    labels 0..2. ``split="all"`` takes every image in ``images/``, including those the list files
    leave out (the dataset's ``list.txt`` does not name all images); ``"trainval"`` and ``"test"``
    take the images named in those files, whose 37-class ids are checked for consistency with
    the file names (one id per breed). The ``annotations/xmls`` boxes cover pet heads only and
    are not read.

    The mask is trimap value 1; ``border="ignore"`` (default) marks value 3 as ``ignore``,
    ``border="object"`` counts it as object (``ignore`` is then None). The box is the mask's
    extent. Trimaps are decoded at construction (about 0.6 ms each) so that an image whose trimap
    holds no pet, or does not match the image size, is caught there.

    Args:
        root: the ``oxford-iiit-pet`` directory.
        split: ``"trainval"``, ``"test"`` or ``"all"``.
        border: what trimap value 3 (the uncertain border) becomes: ``"ignore"`` or ``"object"``.
        transform: callable applied to each sample dict.
        on_error: ``"raise"`` (default) or ``"skip"``.
    """

    def __init__(
        self,
        root: PathArg,
        split: str = "trainval",
        border: str = "ignore",
        transform: Transform = None,
        on_error: str = "raise",
    ) -> None:
        check_choice("split", split, SPLITS)
        check_choice("border", border, BORDERS)
        root = Path(root)
        self.border = border
        problems = Problems(on_error)
        image_dir = root / "images"
        present = {name[: -len(".jpg")] for name in list_images(image_dir) if name.endswith(".jpg")}
        breeds = sorted({_breed(stem) for stem in present}, key=lambda name: (name.lower(), name))
        if split == "all":
            stems = sorted(present)
        else:
            stems = _read_split(root / "annotations" / f"{split}.txt", present, image_dir, problems)
        label_of = label_table(breeds)
        records = []
        for stem in stems:
            if stem in problems.rejected:  # a line about it was already skipped
                continue
            record = self._record(root, stem, label_of[_breed(stem)], problems)
            if record is not None:
                records.append(record)
        super().__init__(records, breeds, transform, problems, root / split)

    def _record(self, root: Path, stem: str, label: int, problems: Problems) -> Record | None:
        """The record of image ``stem``, or None (reported) when its image or trimap is unusable."""
        image_path = root / "images" / f"{stem}.jpg"
        trimap_path = root / "annotations" / "trimaps" / f"{stem}.png"
        try:
            mask, _ = self._masks(load_label_map(trimap_path), trimap_path)
            size = read_size(image_path)
        except DataError as error:
            problems.report(error.location, error.reason, stem)
            return None
        except BadLine as error:
            problems.report(str(image_path), str(error), stem)
            return None
        boxes = mask_box(mask)
        if mask.shape != size:
            reason = f"trimap is {mask.shape[1]}x{mask.shape[0]} but its image {size[1]}x{size[0]}"
            problems.report(str(trimap_path), reason, stem)
        elif len(boxes) == 0:
            problems.report(str(trimap_path), "no pet pixels (value 1)", stem)
        else:
            return Record(stem, image_path, label, boxes, size, trimap_path)
        return None

    def _masks(self, trimap: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        if trimap.min() < PET or trimap.max() > BORDER:  # cheaper than np.unique on every trimap
            unknown = sorted(set(np.unique(trimap).tolist()) - {PET, BACKGROUND, BORDER})
            raise DataError(str(path), f"trimap values {unknown} are not 1, 2 or 3")
        if self.border == "object":
            return (trimap == PET) | (trimap == BORDER), None
        return trimap == PET, trimap == BORDER

    def _annotate(
        self, record: Record, size: Size
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        mask, ignore = self._masks(load_label_map(record.extra), record.extra)
        return record.boxes, mask, ignore


def _breed(stem: str) -> str:
    return stem.rsplit("_", 1)[0]


def _read_split(path: Path, present: set[str], image_dir: Path, problems: Problems) -> list[str]:
    """Image names of a list file, checked: image present, one 37-class id per breed and vice versa."""
    table = read_table(path, 4, problems, what="image, class id, species, breed id")
    breed_of_id: dict[int, str] = {}
    id_of_breed: dict[str, int] = {}
    stems = []
    for stem, (line, (class_text, _, _)) in table.items():
        breed = _breed(stem)
        try:
            class_id = parse_int(class_text, "class id")
            if not 1 <= class_id <= NUM_BREED_IDS:
                raise BadLine(f"class id {class_id} outside 1..{NUM_BREED_IDS}")
            if breed_of_id.setdefault(class_id, breed) != breed:
                raise BadLine(f"class id {class_id} names both {breed_of_id[class_id]!r} and {breed!r}")
            if id_of_breed.setdefault(breed, class_id) != class_id:
                raise BadLine(f"{breed!r} has class id {class_id} here but {id_of_breed[breed]} before")
            if stem not in present:
                raise BadLine(f"image file {image_dir / stem}.jpg not found")
        except BadLine as error:
            problems.reject(error, line, stem)
            continue
        stems.append(stem)
    return stems
