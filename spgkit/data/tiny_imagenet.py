"""Tiny ImageNet-200 (64x64 images, 200 ImageNet classes, one box per image)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from spgkit.boxes import from_inclusive
from spgkit.data.base import (
    BadLine,
    Line,
    PathArg,
    Problems,
    Record,
    RecordDataset,
    Transform,
    check_box,
    label_table,
    list_images,
    parse_box,
    read_lines,
    read_table,
    start,
)

SPLITS = ("train", "val")
SIZE = (64, 64)
"""(height, width) of every Tiny ImageNet image."""


class TinyImageNet(RecordDataset):
    """Tiny ImageNet-200 in its distributed layout (``root`` is ``tiny-imagenet-200``)::

        wnids.txt                              the classes, one wnid a line
        words.txt                              "<wnid>\\t<names>" (optional; gives class_names)
        train/<wnid>/images/<wnid>_<n>.JPEG
        train/<wnid>/<wnid>_boxes.txt          "<file>\\t<x0>\\t<y0>\\t<x1>\\t<y1>"
        val/images/val_<n>.JPEG
        val/val_annotations.txt                "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>"

    Box coordinates in these files are inclusive pixel indices (0..63); they become spgkit's boxes
    by :func:`~spgkit.boxes.from_inclusive`. Labels are the sorted wnids' ranks. Every image must have exactly one
    annotation line and every line an image. (The test split has no labels and is not read.)

    Attributes:
        wnids: the class wnids, in label order. ``class_names`` holds the first name of each in
            ``words.txt`` (the wnid itself where there is none).

    Args:
        root: the ``tiny-imagenet-200`` directory.
        split: ``"train"`` or ``"val"``.
        transform: callable applied to each sample dict.
        on_error: ``"raise"`` (default) or ``"skip"``.
    """

    def __init__(
        self, root: PathArg, split: str = "train", transform: Transform = None, on_error: str = "raise"
    ) -> None:
        root, problems = start(root, split, SPLITS, on_error)
        self.wnids = sorted(read_table(root / "wnids.txt", 1, problems, what="wnid"))
        label_of = label_table(self.wnids)
        records: list[Record] = []
        if split == "train":
            for wnid in self.wnids:
                boxes_file = root / "train" / wnid / f"{wnid}_boxes.txt"
                table = read_table(boxes_file, 5, problems, what="file, x0, y0, x1, y1")
                images = root / "train" / wnid / "images"
                records += _records(
                    images, boxes_file, table, lambda _, index=label_of[wnid]: index, problems
                )
        else:
            annotations = root / "val" / "val_annotations.txt"
            table = read_table(annotations, 6, problems, what="file, wnid, x0, y0, x1, y1")

            def label(fields: list[str]) -> int:
                if fields[0] not in label_of:
                    raise BadLine(f"wnid {fields[0]!r} is not in wnids.txt")
                return label_of[fields[0]]

            records = _records(root / "val" / "images", annotations, table, label, problems)
        super().__init__(
            records, _class_names(root / "words.txt", self.wnids), transform, problems, root / split
        )


def _records(
    image_dir: Path,
    annotation_path: Path,
    table: dict[str, tuple[Line, list[str]]],
    label: Callable[[list[str]], int],
    problems: Problems,
) -> list[Record]:
    """Records of the images in ``image_dir``, one annotation line each (label fields, then a box)."""
    names = list_images(image_dir)
    for name in table.keys() - set(names):
        problems.report(table[name][0].location, f"image file {image_dir / name} not found", name)
    records = []
    for name in names:
        if name in problems.rejected:  # a line about it was already skipped
            continue
        if name not in table:
            problems.report(str(annotation_path), f"no line for image {name}", name)
            continue
        line, fields = table[name]
        try:
            boxes = from_inclusive(parse_box(fields[-4:]), SIZE)
            check_box(boxes[0], SIZE)
            records.append(
                Record(name, image_dir / name, label(fields), boxes.astype(np.float32), SIZE)
            )
        except BadLine as error:
            problems.reject(error, line, name)
    return records


def _class_names(words_file: Path, wnids: list[str]) -> list[str]:
    """The first synonym of each wnid in words.txt, or the wnid where words.txt has none."""
    if not words_file.exists():
        return list(wnids)
    words = {}
    for line in read_lines(words_file):
        wnid, _, names = line.text.partition("\t")
        words[wnid.strip()] = names.split(",")[0].strip()
    return [words.get(wnid) or wnid for wnid in wnids]
