"""A folder of images plus a CSV of boxes: the format for bringing your own data."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spgkit.data.base import (
    BadLine,
    Line,
    PathArg,
    Problems,
    Record,
    RecordDataset,
    Transform,
    blame,
    check_box,
    label_table,
    os_reason,
    parse_box,
    read_lines,
    read_size,
)
from spgkit.data.sample import DataError

COLUMNS = ("image", "label", "x0", "y0", "x1", "y1")


class FolderCSV(RecordDataset):
    """A folder of images with one CSV of labels and boxes per split: the format for bringing
    your own data. The layout::

        root/
            train.csv, test.csv, ...   one file per split (``split="train"`` reads train.csv)
            classes.txt                optional: one class name per line, fixing the class order
            birds/0001.jpg, ...        images, in any folder layout and any format Pillow reads

    Each CSV has a header and one row per box::

        image,label,x0,y0,x1,y1
        birds/0001.jpg,sparrow,12,30,140,118
        birds/0001.jpg,sparrow,150,40,220,120
        cats/0002.png,cat,0,0,64,48

    - ``image``: the image's path relative to ``root``.
    - ``label``: the class *name*. All rows of one image must agree.
    - ``x0,y0,x1,y1``: one box per row (several rows for several boxes), in pixels of the image
      as stored, ``x0, y0`` inclusive and ``x1, y1`` exclusive: a box around pixel columns 3..5
      is ``x0=3, x1=6``. Numbers may be fractional.

    The header is required; its columns may come in any order, and extra columns are ignored.
    Images appear in the order of their first row. The classes, numbered in this order, are
    ``class_names`` when given, else the lines of ``root/classes.txt`` when it exists, else the
    sorted labels of ``root/train.csv`` (so that every split numbers the classes alike), else
    the sorted labels of the CSV read. A label outside the classes is an error. Image sizes are
    read from the image headers at construction so that every box is checked against its image.

    Args:
        root: the folder the image paths are relative to, holding the split CSVs.
        split: the split to read, ``root/<split>.csv``.
        csv_path: read this CSV instead of ``root/<split>.csv``.
        class_names: the class list.
        transform: callable applied to each sample dict.
        on_error: ``"raise"`` (default) or ``"skip"``.
    """

    def __init__(
        self,
        root: PathArg,
        split: str = "train",
        *,
        csv_path: PathArg | None = None,
        class_names: Sequence[str] | None = None,
        transform: Transform = None,
        on_error: str = "raise",
    ) -> None:
        image_root = Path(root)
        csv_path = Path(csv_path) if csv_path is not None else image_root / f"{split}.csv"
        problems = Problems(on_error)
        rows = _read_rows(csv_path, problems)
        if class_names is None:
            class_names = _default_classes(image_root, csv_path, rows)
        else:
            repeated = sorted({name for name in class_names if list(class_names).count(name) > 1})
            if repeated:
                raise ValueError(f"class_names repeats {repeated}: each class needs its own name")
        label_of = label_table(class_names)
        images: dict[str, list[tuple[Line, str, list[str]]]] = {}
        for line, image, label, box_fields in rows:
            images.setdefault(image, []).append((line, label, box_fields))

        def record(image: str) -> Record:
            first_line, label, _ = images[image][0]
            if label not in label_of:
                raise BadLine(f"label {label!r} is not one of the {len(class_names)} class names")
            size = read_size(image_root / image)
            boxes = []
            for line, row_label, box_fields in images[image]:
                with blame(line):
                    if row_label != label:
                        raise BadLine(f"label {row_label!r} differs from {label!r} on line {first_line.lineno}")
                    box = parse_box(box_fields)
                    check_box(box, size)
                boxes.append(box)
            boxes_array = np.array(boxes, dtype=np.float32)
            return Record(image, image_root / image, label_of[label], boxes_array, size)

        records = problems.collect(((image, rows[0][0]) for image, rows in images.items()), record)
        super().__init__(records, class_names, transform, problems, csv_path)


def _default_classes(root: Path, csv_path: Path, rows: list[tuple[Line, str, str, list[str]]]) -> list[str]:
    """classes.txt, else the labels of train.csv, else those of ``rows`` (read from ``csv_path``)."""
    listed = root / "classes.txt"
    if listed.is_file():
        names: dict[str, int] = {}
        for line in read_lines(listed):
            name = line.text.strip()
            if name in names:
                raise DataError(line.location, f"class name {name!r} was already given on line {names[name]}")
            names[name] = line.lineno
        return list(names)
    train = root / "train.csv"
    # Reading train.csv itself, its rows are already at hand. Otherwise its problems are reported
    # when the train split is read, not here.
    if train.is_file() and train.resolve() != csv_path.resolve():
        rows = _read_rows(train, Problems("skip"))
    return sorted({label for _, _, label, _ in rows})


def _read_rows(path: Path, problems: Problems) -> list[tuple[Line, str, str, list[str]]]:
    """``(line, image, label, [x0, y0, x1, y1])`` of each well-formed row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # spreadsheets write a byte-order mark
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            missing = [name for name in COLUMNS if name not in header]
            if missing:
                raise DataError(
                    f"{path}:1", f"header {header} lacks {missing}; it must name {','.join(COLUMNS)}"
                )
            repeated = [name for name in COLUMNS if header.count(name) > 1]
            if repeated:
                raise DataError(f"{path}:1", f"header {header} names column(s) {repeated} more than once")
            columns = [header.index(name) for name in COLUMNS]
            rows = []
            for fields in reader:
                if not any(field.strip() for field in fields):
                    continue
                line = Line(path, reader.line_num, ",".join(fields))
                if len(fields) != len(header):
                    image = fields[columns[0]].strip() if len(fields) > columns[0] else None
                    problems.report(
                        line.location, f"{len(fields)} fields where the header has {len(header)}", image
                    )
                    continue
                image, label, *box_fields = (fields[column].strip() for column in columns)
                rows.append((line, image, label, box_fields))
    except FileNotFoundError:
        raise DataError(str(path), "CSV file not found") from None
    except UnicodeDecodeError as error:
        raise DataError(str(path), f"not a UTF-8 text file ({error})") from None
    except csv.Error as error:  # e.g. a field over the csv module's size limit
        raise DataError(f"{path}:{reader.line_num}", f"malformed CSV ({error})") from None
    except OSError as error:  # a directory, no permission
        raise DataError(str(path), f"cannot read CSV file ({os_reason(error)})") from None
    return rows
