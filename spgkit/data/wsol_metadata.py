"""The metadata format of the WSOL benchmark (Choe et al., CVPR 2020, "wsolevaluation")."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spgkit.boxes import NO_BOXES, from_inclusive, mask_box
from spgkit.data.base import (
    BadLine,
    Line,
    PathArg,
    Problems,
    Record,
    RecordDataset,
    Size,
    Transform,
    blame,
    check_box,
    load_label_map,
    parse_box,
    parse_int,
    read_lines,
    read_table,
)
from spgkit.data.sample import DataError


class WSOLMetadata(RecordDataset):
    """A split described in the WSOL benchmark's metadata format, images under ``image_root``.

    ``metadata_root/<split>/`` holds comma-separated text files, one record per line, where
    ``<image_id>`` is the image's path relative to ``image_root`` (e.g.
    ``val/n01440764/ILSVRC2012_val_00000293.JPEG``)::

        image_ids.txt      <image_id>                        the split, in order
        class_labels.txt   <image_id>,<class index>           0-based
        image_sizes.txt    <image_id>,<width>,<height>
        localization.txt   boxes (CUB, ILSVRC): <image_id>,<x0>,<y0>,<x1>,<y1>
                               one line per box, several lines for several boxes
                           or masks (OpenImages): <image_id>,<mask path>,<ignore path>
                               one line per instance mask; the ignore path is given on the
                               image's first line only (later lines leave it empty)

    ``localization.txt`` is optional: missing or empty (the benchmark's training splits have none,
    its OpenImages ``train/localization.txt`` is an empty file), the split has no annotations and
    samples carry no boxes or masks. Its kind is taken from the first line's field count (5:
    boxes, 3: masks).

    ``image_sizes.txt`` is optional too, as in the benchmark, which reads it only to scale boxes
    (its OpenImages ``image_sizes.txt`` files are empty). A size it gives is checked against the
    decoded image; an image it does not list takes its size from the decoded image when the
    sample is loaded, and its boxes are then checked against that size there (a box outside the
    image raises :class:`~spgkit.data.DataError` at that ``localization.txt`` line, whatever
    ``on_error`` says: a loaded sample cannot be skipped). Mask files must have their image's size.

    Boxes are read as the benchmark reads them: its IoU counts ``x1 - x0 + 1`` pixels, so
    ``x1, y1`` are inclusive and become ``x1 + 1, y1 + 1`` here (see
    :func:`~spgkit.boxes.from_inclusive`). Mask files are relative to ``mask_root``;
    as in the benchmark, a pixel is object where any instance mask is nonzero, and ignored where
    the ignore mask is nonzero and no instance covers it. Mask samples get one box per instance
    mask (its extent), computed when the sample is loaded.

    Args:
        metadata_root: the dataset's metadata directory (e.g. ``metadata/CUB``).
        image_root: the directory image ids are relative to (e.g. ``dataset/CUB``).
        split: the split folder (``"train"``, ``"val"``, ``"test"`` in the benchmark).
        num_classes: number of classes (200 CUB, 1000 ILSVRC, 100 OpenImages); labels outside
            ``[0, num_classes)`` are errors. May be left out when ``class_names`` is given.
        class_names: names of the classes (default: ``"0"``, ``"1"``, ...).
        mask_root: directory mask paths are relative to (default: ``image_root``).
        transform: callable applied to each sample dict.
        on_error: ``"raise"`` (default) or ``"skip"``.
    """

    def __init__(
        self,
        metadata_root: PathArg,
        image_root: PathArg,
        split: str = "test",
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        mask_root: PathArg | None = None,
        transform: Transform = None,
        on_error: str = "raise",
    ) -> None:
        class_names = _class_names(num_classes, class_names)
        split_dir = Path(metadata_root) / split
        image_root = Path(image_root)
        mask_root = Path(mask_root) if mask_root is not None else image_root
        problems = Problems(on_error)
        image_ids, labels, sizes, localization = _read_split(split_dir, problems)

        def record(key: str) -> Record:
            if key not in labels:
                raise BadLine(f"{key!r} has no line in class_labels.txt")
            label = _label(labels[key], len(class_names))
            size = _size(sizes[key]) if key in sizes else None  # None: the decoded image's
            boxes, extra = NO_BOXES, None
            if localization is not None:
                entries = localization.entries.get(key)
                if not entries:
                    raise BadLine(f"{key!r} has no line in localization.txt")
                if localization.kind == "boxes":
                    boxes = _boxes(entries, size)
                    if size is None:  # finished against the decoded size
                        extra = _UnsizedBoxes([line.location for line, _ in entries])
                else:
                    extra = _mask_files(entries, mask_root)
            return Record(key, image_root / key, label, boxes, size, extra)

        records = problems.collect(((key, line) for key, (line, _) in image_ids.items()), record)
        super().__init__(records, class_names, transform, problems, split_dir)

    def _annotate(
        self, record: Record, size: Size
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        if record.extra is None:
            return record.boxes, None, None
        if isinstance(record.extra, _UnsizedBoxes):
            return record.extra.finish(record.boxes, size), None, None
        mask_paths, ignore_path = record.extra
        instances = [_load_mask(path, size) for path in mask_paths]
        boxes = []
        for path, instance in zip(mask_paths, instances):
            box = mask_box(instance)
            if len(box) == 0:
                raise DataError(str(path), "instance mask has no foreground pixels")
            boxes.append(box)
        mask = np.logical_or.reduce(instances)
        ignore = None if ignore_path is None else _load_mask(ignore_path, size) & ~mask
        return np.concatenate(boxes), mask, ignore


def _class_names(num_classes: int | None, class_names: Sequence[str] | None) -> Sequence[str]:
    """The class names: those given, else ``"0"``, ``"1"``, ... for ``num_classes``, checked to agree."""
    if class_names is None:
        if num_classes is None:
            raise ValueError("give num_classes or class_names")
        return [str(index) for index in range(num_classes)]
    if num_classes is not None and num_classes != len(class_names):
        raise ValueError(f"num_classes={num_classes} but {len(class_names)} class_names")
    return class_names


Table = dict[str, tuple[Line, list[str]]]
"""A file :func:`~spgkit.data.base.read_table` read: each image id's line and other fields."""


def _label(entry: tuple[Line, list[str]], num_classes: int) -> int:
    """The label a class_labels.txt line gives, checked to be in ``[0, num_classes)``."""
    line, (text,) = entry
    with blame(line):
        label = parse_int(text, "label")
        if not 0 <= label < num_classes:
            raise BadLine(f"label {label} outside [0, {num_classes})")
    return label


def _size(entry: tuple[Line, list[str]]) -> Size:
    """The (height, width) an image_sizes.txt line gives, checked to be positive."""
    line, (width_text, height_text) = entry
    with blame(line):
        size = (parse_int(height_text, "height"), parse_int(width_text, "width"))
        if min(size) <= 0:
            raise BadLine(f"image size {width_text}x{height_text} is not positive")
    return size


def _read_split(split_dir: Path, problems: Problems) -> tuple[Table, Table, Table, _Localization | None]:
    """The image ids, labels, sizes (empty without image_sizes.txt) and localization (None: a split
    without annotations) of a split; lines about an image not in image_ids.txt are reported."""
    image_ids = read_table(split_dir / "image_ids.txt", 1, problems, sep=",", what="image_id")
    labels = read_table(split_dir / "class_labels.txt", 2, problems, sep=",", what="image_id,label")
    sizes_path = split_dir / "image_sizes.txt"
    sizes = (
        read_table(sizes_path, 3, problems, sep=",", what="image_id,width,height")
        if sizes_path.exists()
        else {}
    )
    for table in (labels, sizes):
        for key in table.keys() - image_ids.keys():
            problems.report(table[key][0].location, f"{key!r} is not in image_ids.txt", key)
    localization_path = split_dir / "localization.txt"
    localization = _read_localization(localization_path, problems) if localization_path.exists() else None
    if localization is not None:
        for key in localization.entries.keys() - image_ids.keys():
            problems.report(localization.entries[key][0][0].location, f"{key!r} is not in image_ids.txt", key)
    return image_ids, labels, sizes, localization


Entries = list[tuple[Line, list[str]]]
"""The localization lines of one image, each with its fields after the image id."""


@dataclass
class _Localization:
    kind: str
    """"boxes" or "masks"."""
    entries: dict[str, Entries]


_KINDS = {5: ("boxes", "image_id,x0,y0,x1,y1"), 3: ("masks", "image_id,mask_path,ignore_path")}


def _read_localization(path: Path, problems: Problems) -> _Localization | None:
    """Group localization.txt by image id; its kind comes from the first well-formed line's field
    count. None for a file without lines: a split without annotations, as the benchmark ships its
    OpenImages ``train/localization.txt``."""
    kind = layout = None
    entries: dict[str, Entries] = defaultdict(list)
    empty = True
    for line in read_lines(path):
        empty = False
        try:
            if kind is None:
                count = len(line.text.split(","))
                if count not in _KINDS:
                    raise BadLine(f"expected 5 fields (boxes) or 3 (masks), found {count}")
                kind, layout = _KINDS[count]
            fields = line.fields(len(layout.split(",")), ",", layout)
        except BadLine as error:
            problems.report(line.location, str(error), line.key(","))
            continue
        entries[fields[0]].append((line, fields[1:]))
    if empty:
        return None
    if kind is None:
        raise DataError(str(path), "no usable line")
    return _Localization(kind, entries)


def _boxes(entries: Entries, size: Size | None) -> np.ndarray:
    """The boxes of one image in spgkit's convention, checked. With ``size`` None (unknown
    until the image is decoded) every ``x1, y1`` gets its ``+ 1`` and only what needs no size is
    checked; :meth:`_UnsizedBoxes.finish` completes both once the size is known."""
    boxes = []
    for line, fields in entries:
        try:
            box = from_inclusive(parse_box(fields), size)[0]
            check_box(box, size)
        except BadLine as error:
            raise BadLine(str(error), line) from None
        boxes.append(box)
    return np.array(boxes, dtype=np.float32)


@dataclass(frozen=True)
class _UnsizedBoxes:
    """Marks the boxes of an image that ``image_sizes.txt`` does not list: its record's ``boxes``
    are ``x0, y0, x1 + 1, y1 + 1`` of the lines at ``locations``, finished when it is decoded."""

    locations: list[str]

    def finish(self, boxes: np.ndarray, size: Size) -> np.ndarray:
        """``boxes`` as :func:`~spgkit.boxes.from_inclusive` makes them for ``size``
        (an ``x1`` written equal to the width stays at the border), checked against ``size``, or
        :class:`DataError` at the culprit's line."""
        height, width = size
        finished = np.array(boxes, dtype=np.float32)
        finished[finished[:, 2] == width + 1, 2] = width
        finished[finished[:, 3] == height + 1, 3] = height
        for location, box in zip(self.locations, finished.tolist()):
            try:
                check_box(tuple(box), size)
            except BadLine as error:
                raise DataError(location, str(error)) from None
        return finished


def _mask_files(entries: Entries, mask_root: Path) -> tuple[list[Path], Path | None]:
    """Instance mask paths and the ignore mask path (or None) of one image, checked to exist."""
    first_line, (_, ignore_text) = entries[0]
    for line, (_, later_ignore) in entries[1:]:
        if later_ignore:
            raise BadLine("ignore path on a later line of the image (only its first line may give one)", line)
    named = [(line, mask_text) for line, (mask_text, _) in entries]
    if ignore_text:
        named.append((first_line, ignore_text))
    for line, text in named:
        if not text:
            raise BadLine("empty mask path", line)
        if not (mask_root / text).is_file():
            raise BadLine(f"mask file {mask_root / text} not found", line)
    return [mask_root / text for _, text in named[: len(entries)]], (
        mask_root / ignore_text
    ) if ignore_text else None


def _load_mask(path: Path, size: Size) -> np.ndarray:
    mask = load_label_map(path)
    if mask.shape != tuple(size):
        raise DataError(str(path), f"mask is {mask.shape[1]}x{mask.shape[0]}, its image {size[1]}x{size[0]}")
    return mask > 0
