"""CUB-200-2011 in its native layout."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spgkit.data.base import (
    BadLine,
    Problems,
    Record,
    RecordDataset,
    check_box,
    parse_box,
    parse_int,
    read_size,
    read_table,
)
from spgkit.data.sample import Sample

SPLITS = ("train", "test", "all")


class CUB(RecordDataset):
    """CUB-200-2011 (Wah et al., 2011) read from the files the dataset ships with.

    ``root`` is the ``CUB_200_2011`` directory::

        classes.txt              "<class id> <name>"          ids 1-based
        images.txt               "<image id> <relative path>" paths under images/
        image_class_labels.txt   "<image id> <class id>"
        bounding_boxes.txt       "<image id> <x> <y> <w> <h>" floats, one box per image
        train_test_split.txt     "<image id> <1 train | 0 test>"
        images/<class>/<name>.jpg

    Labels are class ids ranked in ascending order (id 1 -> 0). A box ``x y w h`` covers ``w``
    pixels from column ``x``: ``(x, y, x + w, y + h)`` in the exclusive convention. Image sizes are
    read from the image headers at construction so that every box is checked against its image.

    Args:
        root: the ``CUB_200_2011`` directory.
        split: ``"train"``, ``"test"`` (the official split) or ``"all"``.
        transform: callable applied to each sample dict.
        on_error: ``"raise"`` (default) or ``"skip"`` (see :class:`~spgkit.data.base.Problems`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable[[Sample], Any] | None = None,
        on_error: str = "raise",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        root = Path(root)
        problems = Problems(on_error)
        classes = read_table(root / "classes.txt", 2, problems, what="class id, name")
        class_ids = {}
        for key, (line, _) in classes.items():
            try:
                class_ids[key] = parse_int(key, "class id")
            except BadLine as error:
                problems.report(line.location, str(error))
        rank = {key: index for index, key in enumerate(sorted(class_ids, key=class_ids.__getitem__))}
        images = read_table(root / "images.txt", 2, problems, what="image id, path")
        tables = {
            name: read_table(root / name, count, problems, what=layout)
            for name, count, layout in (
                ("image_class_labels.txt", 2, "image id, class id"),
                ("bounding_boxes.txt", 5, "image id, x, y, w, h"),
                ("train_test_split.txt", 2, "image id, is_training"),
            )
        }
        for table in tables.values():
            for key in table.keys() - images.keys():
                problems.report(table[key][0].location, f"image id {key} is not listed in images.txt", key)

        records = []
        for key, (image_line, (relative_path,)) in images.items():
            if key in problems.rejected:  # a line about it was already skipped
                continue
            at = image_line  # the line a failure below is reported at
            try:
                missing = [name for name, table in tables.items() if key not in table]
                if missing:
                    raise BadLine(f"image id {key} has no line in {', '.join(missing)}")
                at, (flag,) = tables["train_test_split.txt"][key]
                if flag not in ("0", "1"):
                    raise BadLine(f"is_training {flag!r} is neither 1 nor 0")
                if split != "all" and (flag == "1") != (split == "train"):
                    continue
                at, (class_id,) = tables["image_class_labels.txt"][key]
                if class_id not in rank:
                    raise BadLine(f"class id {class_id} is not in classes.txt")
                at = image_line
                path = root / "images" / relative_path
                size = read_size(path)
                at, box_fields = tables["bounding_boxes.txt"][key]
                x, y, w, h = parse_box(box_fields, names=("x", "y", "w", "h"))
                box = (x, y, x + w, y + h)
                check_box(box, size)
            except BadLine as error:
                problems.reject(error, at, key)
                continue
            records.append(
                Record(relative_path, path, rank[class_id], np.array([box], dtype=np.float32), size)
            )
        names = [classes[key][1][0] for key in rank]
        super().__init__(records, names, transform, problems, root)
