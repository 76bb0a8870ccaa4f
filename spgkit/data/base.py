"""Machinery shared by the file-based readers: the error policy, annotation-line parsing, box
checks, image decoding, and :class:`RecordDataset`, the base class that turns parsed records into
:class:`~spgkit.data.Sample` dicts.

Readers parse and validate every annotation eagerly (at construction) into :class:`Record` objects;
only pixels are decoded lazily, in ``__getitem__``. A reader's ``__init__`` begins with :func:`start`
(split checked, error policy), reads its tables (:func:`read_table`), builds each record in a
function that :meth:`Problems.collect` calls per image (:func:`blame` names the line at fault), and
ends with ``RecordDataset.__init__``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from spgkit.boxes import BoxError, box_problem, check_boxes
from spgkit.data.sample import DataError, Sample, make_sample

Box = tuple[float, float, float, float]
Size = tuple[int, int]
"""(height, width) of an image, in the order of tensor shapes."""
PathArg = str | os.PathLike
"""A path argument: a string or a path-like object."""
Transform = Callable[[Sample], Any] | None
"""A reader's ``transform`` argument: applied to each sample dict."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

MAX_IMAGE_PIXELS: int | None = 250_000_000
"""The largest image (width x height) the readers decode; larger ones raise :class:`DataError`
naming the file and its pixel count. None lifts the limit.

Pillow's own guard against decompression bombs warns above about 89 million pixels
(``PIL.Image.MAX_IMAGE_PIXELS``) and refuses above twice that, which stops real photos (a
100-megapixel camera frame). The readers replace it by this deliberate cap: 250 million pixels,
about 750 MB once decoded to RGB, above the largest camera sensors (about 150 million pixels);
Pillow's per-frame and per-tile checks keep working at this cap while the readers decode. No
``DecompressionBombWarning`` escapes, even where warnings are errors. Pillow's global is
restored after each decode."""


class BadLine(Exception):
    """An annotation line cannot be used; the message says why.

    ``line`` names the culprit when the raiser knows it; otherwise the catcher reports the error at
    the line it was reading (:meth:`Problems.reject`).
    """

    def __init__(self, reason: str, line: Line | None = None) -> None:
        super().__init__(reason)
        self.line = line


class Problems:
    """The error policy of one dataset construction (its ``on_error`` argument).

    ``"raise"``: the first problem raises :class:`DataError`. ``"skip"``: every problem is recorded
    in :attr:`skipped` as ``(location, reason)`` and the image it concerns (its ``key``) joins
    :attr:`rejected`; the reader leaves rejected images out as a whole, so no image is ever kept
    with part of its annotation missing.
    """

    def __init__(self, on_error: str) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        self.on_error = on_error
        self.skipped: list[tuple[str, str]] = []
        self.rejected: set[Any] = set()

    def report(self, location: str, reason: str, key: Any = None) -> None:
        """Raise, or record the problem at ``location`` (``path`` or ``path:lineno``) and reject ``key``."""
        if self.on_error == "raise":
            raise DataError(location, reason)
        self.skipped.append((location, reason))
        if key is not None:
            self.rejected.add(key)

    def reject(self, error: BadLine, at: Line, key: Any) -> None:
        """Report ``error`` at its own line, or at ``at`` when it names none, and reject ``key``."""
        self.report((error.line or at).location, str(error), key)

    def collect(
        self, entries: Iterable[tuple[Any, Line]], build: Callable[[Any], Record | None]
    ) -> list[Record]:
        """The records ``build(key)`` makes of each ``(key, line)`` entry whose key is not rejected
        yet (None: no record, e.g. another split's image). A :class:`BadLine` rejects the key,
        reported at its own line or at the entry's ``line``."""
        records = []
        for key, line in entries:
            if key in self.rejected:  # a line about it was already skipped
                continue
            try:
                record = build(key)
            except BadLine as error:
                self.reject(error, line, key)
                continue
            if record is not None:
                records.append(record)
        return records


@contextlib.contextmanager
def blame(line: Line) -> Iterator[None]:
    """Report a :class:`BadLine` raised inside that names no line of its own at ``line``."""
    try:
        yield
    except BadLine as error:
        error.line = error.line or line
        raise


def check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    """Raise ``ValueError`` unless the argument ``name`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, not {value!r}")


def start(root: PathArg, split: str, splits: Sequence[str], on_error: str) -> tuple[Path, Problems]:
    """What every split reader begins with: ``split`` checked, ``root`` as a path, the error policy."""
    check_choice("split", split, splits)
    return Path(root), Problems(on_error)


def label_table(names: Iterable[str]) -> dict[str, int]:
    """The label of each class name: its index in ``names``."""
    return {name: index for index, name in enumerate(names)}


@dataclass(frozen=True)
class Line:
    """One non-blank line of an annotation file."""

    path: Path
    lineno: int
    text: str

    @property
    def location(self) -> str:
        """``path:lineno``, the prefix of every message about this line."""
        return f"{self.path}:{self.lineno}"

    def key(self, sep: str | None = None) -> str:
        """The first field (the image the line is about), even when the line is malformed."""
        return self.text.split(sep, 1)[0].strip()

    def fields(self, count: int, sep: str | None = None, what: str = "") -> list[str]:
        """Split into exactly ``count`` fields (on whitespace if ``sep`` is None), stripped."""
        parts = [part.strip() for part in (self.text.split(sep) if sep else self.text.split())]
        if len(parts) != count:
            layout = f" ({what})" if what else ""
            raise BadLine(f"expected {count} fields{layout}, found {len(parts)} in {self.text.strip()!r}")
        return parts


def read_lines(path: Path) -> Iterator[Line]:
    """Yield the non-blank lines of a text annotation file, numbered from 1."""
    try:
        with open(path, encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark is not text
            for lineno, text in enumerate(handle, start=1):
                if text.strip():
                    yield Line(path, lineno, text.rstrip("\r\n"))
    except FileNotFoundError:
        raise DataError(str(path), "annotation file not found") from None
    except UnicodeDecodeError as error:
        raise DataError(str(path), f"not a UTF-8 text file ({error})") from None
    except OSError as error:  # a directory, no permission, an I/O error
        raise DataError(str(path), f"cannot read annotation file ({os_reason(error)})") from None


def os_reason(error: OSError) -> str:
    """What an :class:`OSError` says, without the path the message already starts with."""
    return error.strerror or str(error) or type(error).__name__


def read_table(
    path: Path, count: int, problems: Problems, sep: str | None = None, what: str = ""
) -> dict[str, tuple[Line, list[str]]]:
    """Read a file of ``count``-field lines keyed by their first field (one line per key).

    Returns ``{key: (line, other fields)}`` in file order. A malformed or repeated line is reported
    to ``problems`` under its key.
    """
    table: dict[str, tuple[Line, list[str]]] = {}
    for line in read_lines(path):
        key = line.key(sep)
        try:
            fields = line.fields(count, sep, what)
        except BadLine as error:
            problems.report(line.location, str(error), key)
            continue
        if key in table:
            problems.report(line.location, f"{key!r} was already given on line {table[key][0].lineno}", key)
            continue
        table[key] = (line, fields[1:])
    return table


def parse_int(text: str, what: str) -> int:
    """Parse an integer field, or raise :class:`BadLine` naming the field."""
    try:
        return int(text)
    except ValueError:
        raise BadLine(f"{what} {text!r} is not an integer") from None


def parse_float(text: str, what: str) -> float:
    """Parse a finite number, or raise :class:`BadLine` naming the field."""
    try:
        value = float(text)
    except ValueError:
        raise BadLine(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise BadLine(f"{what} {text!r} is not finite")
    return value


def parse_box(texts: Sequence[str], names: Sequence[str] = ("x0", "y0", "x1", "y1")) -> Box:
    """Parse four number fields (``x0, y0, x1, y1``, or the fields ``names`` says they are)."""
    x0, y0, x1, y1 = (parse_float(text, name) for text, name in zip(texts, names, strict=True))
    return x0, y0, x1, y1


def check_box(box: Box, size: Size | None) -> None:
    """Raise :class:`BadLine` unless ``box`` follows the box convention of
    :mod:`spgkit.boxes` in an image of ``size`` (None: not known yet, see
    :func:`~spgkit.boxes.box_problem`)."""
    problem = box_problem(box, size)
    if problem is not None:
        raise BadLine(problem)


class TooLarge(Exception):
    """An image has more pixels than :data:`MAX_IMAGE_PIXELS`; the message gives the count."""


# Pillow's limit is a module global: decodes that raise it to MAX_IMAGE_PIXELS take turns.
_PIL_LIMIT_LOCK = threading.RLock()


def _new_lock() -> None:  # a child forked while another thread decoded must not inherit a held lock
    global _PIL_LIMIT_LOCK
    _PIL_LIMIT_LOCK = threading.RLock()


os.register_at_fork(after_in_child=_new_lock)
_PIL_PIXELS = re.compile(r"Image size \((\d+) pixels\)")


@contextlib.contextmanager
def _open_image(path: Path) -> Iterator[Image.Image]:
    """``Image.open(path)`` under :data:`MAX_IMAGE_PIXELS` instead of Pillow's decompression-bomb
    limit; raises :class:`TooLarge` for an image over it. Pillow's bomb warnings are kept from
    the caller (they could be errors); other warnings pass on."""
    limit = MAX_IMAGE_PIXELS
    with _PIL_LIMIT_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit  # Pillow then warns above the limit and refuses above twice it
        try:
            try:
                image = Image.open(path)
            except Image.DecompressionBombError as error:
                raise TooLarge(_too_large(error, limit)) from None
            with image:
                width, height = image.size
                if limit is not None and width * height > limit:
                    raise TooLarge(_too_large(f"{width}x{height} = {width * height:,}", limit))
                try:
                    yield image
                except Image.DecompressionBombError as error:  # a frame or tile over the limit
                    raise TooLarge(_too_large(error, limit)) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    for warning in caught:
        if not issubclass(warning.category, Image.DecompressionBombWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _too_large(pixels: str | Exception, limit: int | None) -> str:
    """The reason for refusing an image of ``pixels`` (a count, or Pillow's error that holds one)."""
    if isinstance(pixels, Exception):
        found = _PIL_PIXELS.search(str(pixels))
        pixels = f"{int(found.group(1)):,}" if found else "too many"
    return (
        f"image of {pixels} pixels is over the limit of {limit or 0:,} pixels "
        "(spgkit.data.base.MAX_IMAGE_PIXELS; raise it if the image is genuine)"
    )


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError, ZeroDivisionError)
"""What Pillow raises on corrupt files (its decoders raise more than ``OSError`` on crafted input)."""


def _decode_reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, (OSError, SyntaxError, ValueError)) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def read_size(path: Path) -> Size:
    """(height, width) from an image file's header, without decoding its pixels."""
    try:
        with _open_image(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise BadLine(f"image file {path} not found") from None
    except TooLarge as error:
        raise BadLine(f"image file {path}: {error}") from None
    except _DECODE_ERRORS as error:
        raise BadLine(f"image file {path} is not a readable image ({_decode_reason(error)})") from None
    return height, width


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to uint8 RGB (H, W, 3); grayscale, palette, alpha and high-depth
    images included (16-bit, 32-bit integer and float grayscale are scaled to 8 bits, where
    ``convert("RGB")`` would clip every value above 255 to white). EXIF orientation is not
    applied, as in the WSOL benchmark (``Image.open(path).convert("RGB")``). Images over
    :data:`MAX_IMAGE_PIXELS` raise :class:`DataError`."""
    with _decoding(path, "image file not found", "cannot decode image"), _open_image(path) as image:
        if not (image.mode.startswith("I") or image.mode == "F"):
            return np.asarray(image.convert("RGB"))
        values = np.asarray(image, dtype=np.float64)
        mode = image.mode
    if not np.isfinite(values).all():
        raise DataError(str(path), "image has NaN or infinite pixel values")
    peak = values.max(initial=0)
    if mode.startswith("I;16") or peak > 255:
        depth = 65535.0
    else:
        depth = 1.0 if mode == "F" and peak <= 1 else 255.0
    gray = np.clip(np.rint(values / depth * 255), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def load_label_map(path: Path) -> np.ndarray:
    """Decode a single-channel annotation image (trimap, mask) to its raw values (H, W).
    Images over :data:`MAX_IMAGE_PIXELS` raise :class:`DataError`."""
    with _decoding(path, "annotation image not found", "cannot decode annotation image"), _open_image(path) as image:
        if image.mode not in ("1", "L", "P", "I", "I;16"):
            image = image.convert("L")
        return np.asarray(image)


@contextlib.contextmanager
def _decoding(path: Path, missing: str, undecodable: str) -> Iterator[None]:
    """Turn the failures of decoding ``path`` into :class:`DataError`: ``missing`` when there is no
    such file, ``undecodable (why)`` when Pillow cannot decode it, or the pixel count over the limit."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(str(path), missing) from None
    except TooLarge as error:
        raise DataError(str(path), str(error)) from None
    except _DECODE_ERRORS as error:
        raise DataError(str(path), f"{undecodable} ({_decode_reason(error)})") from None


def list_images(directory: Path) -> list[str]:
    """Sorted names of the image files directly inside ``directory`` (by suffix, any case)."""
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        raise DataError(str(directory), "directory not found") from None
    except OSError as error:  # not a directory, no permission
        raise DataError(str(directory), f"cannot list directory ({os_reason(error)})") from None
    with entries:
        return sorted(
            entry.name
            for entry in entries
            if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
        )


@dataclass(slots=True)
class Record:
    """What a reader knows about one image before decoding it."""

    image_id: str
    path: Path
    label: int
    boxes: np.ndarray
    """(n, 4) float32 in the box convention of :mod:`spgkit.boxes`."""
    size: Size | None = None
    """(height, width) known from the annotations or the header; checked against the decoded image."""
    extra: Any = None
    """Format-specific: what the reader's ``_annotate`` needs (mask files, trimap path)."""


class RecordDataset(Dataset):
    """Base class of the file-based readers: a list of validated :class:`Record` s served as samples.

    Annotations are checked when the dataset is built, under its ``on_error`` policy. Pixels are
    decoded in ``__getitem__``, where an unreadable image (or a mask file that does not match its
    image) always raises :class:`DataError` naming the file: a map-style dataset cannot drop an
    index once it has promised it.

    Attributes:
        num_classes: number of classes; labels are in ``[0, num_classes)``.
        class_names: the name of each class index.
        skipped: ``(location, reason)`` of every problem skipped under ``on_error="skip"`` (empty
            under ``"raise"``). One warning summarises them at construction.
        records: the parsed annotation of every image, in sample order.
    """

    def __init__(
        self,
        records: list[Record],
        class_names: Sequence[str],
        transform: Callable[[Sample], Any] | None,
        problems: Problems,
        source: Path,
    ) -> None:
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.transform = transform
        self.skipped = problems.skipped
        self.records = records
        if problems.skipped:
            first_location, first_reason = problems.skipped[0]
            warnings.warn(
                f"{type(self).__name__}: {len(problems.skipped)} problem(s) in {source} skipped "
                f"(on_error='skip'), {len(problems.rejected)} image(s) rejected; see .skipped. "
                f"First: {first_location}: {first_reason}",
                stacklevel=3,
            )
        if not records:
            raise DataError(str(source), "no usable images in this split")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Any:
        record = self.records[index]
        image = load_rgb(record.path)
        size = image.shape[:2]
        if record.size is not None and tuple(size) != tuple(record.size):
            raise DataError(
                str(record.path),
                f"decoded as {size[1]}x{size[0]} but its annotation says {record.size[1]}x{record.size[0]}",
            )
        boxes, mask, ignore = self._annotate(record, size)
        try:  # the parsed boxes were checked line by line; this checks what a sample will carry
            check_boxes(boxes, size)
        except BoxError as error:
            raise DataError(str(record.path), f"{type(self).__name__}: {error}") from None
        sample = make_sample(image, record.label, boxes, mask, ignore, record.image_id)
        return self.transform(sample) if self.transform is not None else sample

    def _annotate(
        self, record: Record, size: Size
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Boxes, mask and ignore mask of one decoded image; readers with pixel annotations override."""
        return record.boxes, None, None
