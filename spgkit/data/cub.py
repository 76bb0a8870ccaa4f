"""CUB-200-2011 in its native layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spgkit.boxes import from_xywh
from spgkit.data.base import (
    BadLine,
    PathArg,
    Problems,
    Record,
    RecordDataset,
    Transform,
    blame,
    check_box,
    label_table,
    parse_box,
    parse_int,
    read_size,
    read_table,
    start,
)

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
    pixels from column ``x``: ``(x, y, x + w, y + h)`` in spgkit's convention
    (:func:`~spgkit.boxes.from_xywh`). Image sizes are
    read from the image headers at construction so that every box is checked against its image.

    Args:
        root: the ``CUB_200_2011`` directory.
        split: ``"train"``, ``"test"`` (the official split) or ``"all"``.
        transform: callable applied to each sample dict.
        on_error: ``"raise"`` (default) or ``"skip"`` (see :class:`~spgkit.data.base.Problems`).
    """

    def __init__(
        self, root: PathArg, split: str = "train", transform: Transform = None, on_error: str = "raise"
    ) -> None:
        root, problems = start(root, split, SPLITS, on_error)
        rank, names = _read_classes(root / "classes.txt", problems)
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

        def record(key: str) -> Record | None:
            missing = [name for name, table in tables.items() if key not in table]
            if missing:
                raise BadLine(f"image id {key} has no line in {', '.join(missing)}")
            split_line, (flag,) = tables["train_test_split.txt"][key]
            if flag not in ("0", "1"):
                raise BadLine(f"is_training {flag!r} is neither 1 nor 0", split_line)
            if split != "all" and (flag == "1") != (split == "train"):
                return None
            label_line, (class_id,) = tables["image_class_labels.txt"][key]
            if class_id not in rank:
                raise BadLine(f"class id {class_id} is not in classes.txt", label_line)
            relative_path = images[key][1][0]
            size = read_size(root / "images" / relative_path)
            box_line, box_fields = tables["bounding_boxes.txt"][key]
            with blame(box_line):
                boxes = from_xywh(parse_box(box_fields, names=("x", "y", "w", "h")))
                check_box(boxes[0], size)
            return Record(relative_path, root / "images" / relative_path, rank[class_id], boxes.astype(np.float32), size)

        records = problems.collect(((key, line) for key, (line, _) in images.items()), record)
        super().__init__(records, names, transform, problems, root)


def _read_classes(path: Path, problems: Problems) -> tuple[dict[str, int], list[str]]:
    """The label of each class id of classes.txt (the ids ranked in ascending order), and the names."""
    classes = read_table(path, 2, problems, what="class id, name")
    class_ids = {}
    for key, (line, _) in classes.items():
        try:
            class_ids[key] = parse_int(key, "class id")
        except BadLine as error:
            problems.report(line.location, str(error))
    rank = label_table(sorted(class_ids, key=class_ids.__getitem__))
    return rank, [classes[key][1][0] for key in rank]
