"""The sample contract every dataset in :mod:`spgkit.data` follows, and :func:`collate`.

A reader's ``__getitem__`` returns a plain dict shaped like :class:`Sample`. Keeping images, boxes
and masks as :mod:`torchvision.tv_tensors` lets a ``torchvision.transforms.v2`` pipeline applied to
the whole dict move them together (crop, flip, resize).

Boxes follow spgkit's one box convention (:mod:`spgkit.boxes`: half-open ``x0, y0,
x1, y1`` in the image's pixels, an image without a box has none, shape (0, 4)); every reader converts
its files' boxes to it and checks them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import torch
from torchvision import tv_tensors


class DataError(ValueError):
    """A dataset file is missing, unreadable or malformed.

    The message starts with the culprit: ``path: what is wrong`` for a file, and
    ``path:lineno: what is wrong`` for an annotation line. It is always one line (line breaks in
    a reason become spaces). Raised in a ``DataLoader`` worker, it reaches the main process as a
    ``DataError`` with the same message, not torch's text of the worker's traceback (its
    ``location`` is then None and ``reason`` the whole message).

    Attributes:
        location: the culprit, ``path`` or ``path:lineno`` (None when built from a bare message).
        reason: what is wrong.
    """

    def __init__(self, location: str, reason: str | None = None) -> None:
        # One argument is a finished message. torch's DataLoader re-raises an exception from a
        # worker process (or its pin-memory thread) as ``type(exc)(text)``, where the text is
        # "Caught DataError in DataLoader worker process 0.\nOriginal Traceback ..." followed by
        # the worker's whole traceback: only the error's own line of it is kept.
        if reason is None:
            location = _worker_message(type(self), location)
        else:
            location, reason = _one_line(location), _one_line(reason)
        super().__init__(_one_line(location) if reason is None else f"{location}: {reason}")
        self.location = None if reason is None else location
        self.reason = self.args[0] if reason is None else reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep ``location`` and ``reason`` through pickling (multiprocessing, spawn-started workers).
        args = (self.reason,) if self.location is None else (self.location, self.reason)
        return type(self), args, self.__dict__


_WORKER_TEXT = re.compile(r"\ACaught \w+ .*?\.\nOriginal Traceback \(most recent call last\):\n", re.DOTALL)


def _worker_message(exc_type: type, text: str) -> str:
    """The error's own message when ``text`` is torch's re-raise text of a worker's traceback."""
    if not isinstance(text, str) or not _WORKER_TEXT.match(text):
        return text
    module, name = exc_type.__module__, exc_type.__qualname__
    prefix = f"{name}: " if module in ("__main__", "builtins") else f"{module}.{name}: "
    for line in reversed(text.splitlines()):  # the last one: the error itself, after any it was raised from
        if line.startswith(prefix):
            return line[len(prefix) :]
    return text


def _one_line(text: Any) -> Any:
    """``text`` with its line breaks (e.g. from a decoder's message) turned into spaces."""
    if not isinstance(text, str) or ("\n" not in text and "\r" not in text):
        return text
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


class Sample(TypedDict):
    """One example, as every reader's ``__getitem__`` returns it (before its ``transform``).

    Attributes:
        image: ``tv_tensors.Image``, uint8, shape (3, H, W), RGB (grayscale is decoded to RGB).
        label: class index in ``[0, num_classes)``.
        boxes: ``tv_tensors.BoundingBoxes`` of shape (n, 4), format XYXY, ``canvas_size=(H, W)``,
            float32, in the box convention of :mod:`spgkit.boxes`. n >= 1 on
            every split that carries localization labels; a split published without any (ILSVRC
            train, a WSOL-benchmark split with no or an empty ``localization.txt``) gives n = 0.
        mask: ``tv_tensors.Mask`` (H, W), uint8 in {0, 1}: the whole-object mask, or None where
            the format has none.
        ignore: ``tv_tensors.Mask`` (H, W), uint8 in {0, 1}: pixels PxAP must ignore, or None.
        image_id: a string naming the image within its dataset.
    """

    image: tv_tensors.Image
    label: int
    boxes: tv_tensors.BoundingBoxes
    mask: tv_tensors.Mask | None
    ignore: tv_tensors.Mask | None
    image_id: str


def make_sample(
    image: np.ndarray | torch.Tensor,
    label: int,
    boxes: np.ndarray,
    mask: np.ndarray | None,
    ignore: np.ndarray | None,
    image_id: str,
) -> Sample:
    """Wrap decoded arrays into a :class:`Sample`.

    Args:
        image: uint8 RGB, either (H, W, 3) numpy (as decoded) or a (3, H, W) tensor.
        label: class index.
        boxes: (n, 4) XYXY in the box convention of :mod:`spgkit.boxes`.
        mask: (H, W) array, nonzero = object, or None.
        ignore: (H, W) array, nonzero = ignored, or None.
        image_id: the image's name in its dataset.
    """
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    height, width = image.shape[-2:]
    return Sample(
        image=tv_tensors.Image(image),
        label=int(label),
        boxes=tv_tensors.BoundingBoxes(
            torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            format="XYXY",
            canvas_size=(height, width),
        ),
        mask=_as_mask(mask),
        ignore=_as_mask(ignore),
        image_id=image_id,
    )


def _as_mask(array: np.ndarray | None) -> tv_tensors.Mask | None:
    if array is None:
        return None
    return tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(array != 0, dtype=np.uint8)))


# Contract keys take plural batch names; every other key keeps its own name.
_BATCH_NAMES = {"image": "images", "label": "labels", "mask": "masks", "image_id": "image_ids"}


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch transformed samples, for ``DataLoader(collate_fn=collate)``.

    Returns a dict with ``images`` float (N, 3, H, W), ``labels`` long (N,), ``boxes`` a list of N
    float tensors (n_i, 4), ``masks`` bool (N, H, W) or None (None if any sample lacks a mask),
    ``ignore`` bool (N, H, W) or None (None if no sample has one; a sample without one ignores
    nothing, so it contributes zeros), and ``image_ids`` a list of str. Other keys are batched by
    type: ``BoundingBoxes`` as a list of float tensors (like ``boxes``), ``Mask`` as a bool stack
    (None if any is None), other tensors stacked, numbers as a tensor, anything else as a list.

    The images must already be float and share one size (``train_transform`` and
    ``eval_transform`` do both); a uint8 image raises ``TypeError``.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    keys = list(samples[0].keys())
    for sample in samples[1:]:
        if list(sample.keys()) != keys:
            raise ValueError(f"collate: samples have different keys: {keys} and {list(sample.keys())}")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [sample[key] for sample in samples]
        if key == "image":
            batch["images"] = _stack_images(values, [sample.get("image_id") for sample in samples])
        elif key == "label":
            batch["labels"] = torch.as_tensor(values, dtype=torch.long)
        elif key == "ignore":
            batch["ignore"] = _stack_ignore(values)
        else:
            batch[_BATCH_NAMES.get(key, key)] = _collate_values(values)
    return batch


def _stack_images(images: list[torch.Tensor], image_ids: list[Any]) -> torch.Tensor:
    for image, image_id in zip(images, image_ids):
        if not image.is_floating_point():
            raise TypeError(
                f"collate: image {image_id!r} is {image.dtype}; apply spgkit.data.train_transform or "
                "eval_transform first (they convert to float and resize to one size)"
            )
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(f"collate: images differ in size {sorted(shapes)}; resize them to one size first")
    return torch.stack([image.as_subclass(torch.Tensor) for image in images])


def _stack_ignore(values: list[torch.Tensor | None]) -> torch.Tensor | None:
    present = [value for value in values if value is not None]
    if not present:
        return None
    blank = torch.zeros(present[0].shape, dtype=torch.bool)
    return torch.stack(
        [blank if value is None else value.as_subclass(torch.Tensor).bool() for value in values]
    )


def _collate_values(values: list[Any]) -> Any:
    if all(value is None for value in values):
        return None
    if any(isinstance(value, tv_tensors.Mask) for value in values):
        if any(value is None for value in values):
            return None
        return torch.stack([value.as_subclass(torch.Tensor).bool() for value in values])
    first = values[0]
    if isinstance(first, tv_tensors.BoundingBoxes):
        return [value.as_subclass(torch.Tensor).float() for value in values]
    if isinstance(first, torch.Tensor):
        return torch.stack([value.as_subclass(torch.Tensor) for value in values])
    if isinstance(first, (bool, int, float)):
        return torch.as_tensor(values)
    return list(values)
