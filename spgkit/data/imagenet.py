"""ILSVRC-2012 (ImageNet-1k CLS-LOC): class folders for training, Pascal-VOC XML boxes for validation."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spgkit.boxes import NO_BOXES, from_inclusive
from spgkit.data.base import (
    BadLine,
    PathArg,
    Record,
    RecordDataset,
    Size,
    Transform,
    check_box,
    label_table,
    list_images,
    os_reason,
    parse_box,
    parse_int,
    start,
)
from spgkit.data.sample import DataError

SPLITS = ("train", "val")


class ImageNet(RecordDataset):
    """ILSVRC-2012 classification-localization data::

        root/train/<wnid>/*.JPEG     the class is the folder; no boxes (``boxes`` has shape (0, 4))
        root/val/*.JPEG              one Pascal-VOC XML per image, <xml_dir>/<image stem>.xml

    Class order is the sorted wnids (the usual ImageNet label order). A validation image takes its
    class from the ``<name>`` of its XML objects (all objects of one image must agree) and one box
    per object. XML boxes are read as the WSOL benchmark reads them, ``xmax``/``ymax`` inclusive
    (see :func:`~spgkit.boxes.from_inclusive`); the XML ``<size>`` is checked against
    the decoded image.

    Args:
        root: directory holding ``train/`` and/or ``val/``.
        split: ``"train"`` or ``"val"``.
        transform: callable applied to each sample dict.
        on_error: ``"raise"`` (default) or ``"skip"``.
        xml_dir: where the validation XMLs are (default: ``root/val`` beside the images).
        wnids: the class list. Default: the class folders of ``root/train``, which must then exist.
            Given explicitly, only those classes are read from ``train/``.
    """

    def __init__(
        self,
        root: PathArg,
        split: str = "train",
        transform: Transform = None,
        on_error: str = "raise",
        xml_dir: PathArg | None = None,
        wnids: Sequence[str] | None = None,
    ) -> None:
        root, problems = start(root, split, SPLITS, on_error)
        if wnids is None:
            train_dir = root / "train"
            if not train_dir.is_dir():
                raise DataError(str(train_dir), "not found; pass wnids= to give the class list")
            wnids = sorted(entry.name for entry in os.scandir(train_dir) if entry.is_dir())
        wnids = sorted(wnids)
        label_of = label_table(wnids)
        records = []
        if split == "train":
            for wnid in wnids:
                for name in list_images(root / "train" / wnid):
                    records.append(
                        Record(f"{wnid}/{name}", root / "train" / wnid / name, label_of[wnid], NO_BOXES)
                    )
        else:
            xml_dir = Path(xml_dir) if xml_dir is not None else root / "val"
            for name in list_images(root / "val"):
                xml_path = xml_dir / f"{Path(name).stem}.xml"
                try:
                    size, wnid, boxes = _read_voc(xml_path)
                    if wnid not in label_of:
                        raise BadLine(f"class {wnid!r} is not one of the {len(wnids)} classes")
                except BadLine as error:
                    problems.report(str(xml_path), str(error), name)
                    continue
                except ET.ParseError as error:
                    problems.report(f"{xml_path}:{error.position[0]}", f"malformed XML ({error})", name)
                    continue
                records.append(Record(name, root / "val" / name, label_of[wnid], boxes, size))
        super().__init__(records, wnids, transform, problems, root / split)


def _read_voc(path: Path) -> tuple[Size, str, np.ndarray]:
    """(size, class name, boxes) of one Pascal-VOC annotation file; ``ET.ParseError`` propagates."""
    try:
        tree = ET.parse(path)
    except FileNotFoundError:
        raise BadLine("annotation file not found") from None
    except OSError as error:  # a directory, no permission
        raise BadLine(f"cannot read annotation file ({os_reason(error)})") from None
    size = (_int_field(tree, "size/height"), _int_field(tree, "size/width"))
    names, boxes = set(), []
    objects = tree.findall("object")
    if not objects:
        raise BadLine("no <object> element")
    for number, element in enumerate(objects, start=1):
        try:
            names.add(_text(element, "name"))
            box = from_inclusive(parse_box([_text(element, f"bndbox/{tag}") for tag in _BOX_TAGS]), size)[0]
            check_box(box, size)
        except BadLine as error:
            raise BadLine(f"object {number}: {error}") from None
        boxes.append(box)
    if len(names) > 1:
        raise BadLine(f"objects of different classes {sorted(names)} in one image")
    return size, names.pop(), np.array(boxes, dtype=np.float32)


_BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


def _text(element: ET.Element, tag: str) -> str:
    found = element.find(tag)
    if found is None or not (found.text or "").strip():
        raise BadLine(f"<{tag}> is missing or empty")
    return found.text.strip()


def _int_field(element: ET.ElementTree, tag: str) -> int:
    return parse_int(_text(element, tag), f"<{tag}>")
