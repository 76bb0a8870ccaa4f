"""What a run's numbers depend on, beyond its declaration: the source of every plugin it used, the
data it read, and the versions of the libraries that computed it.

A run records these in its ``config.json`` (:func:`spgkit.runs.run_config`), so an edited head in an
editable install, a rewritten annotation file or a retrained model are noticed: such a run is
refused, trained again or scored again, never reported as the result of the new state.

- :func:`source_fingerprint`: a hash of the code that defines a registered head, backbone or
  dataset reader. For a plugin distribution, every ``.py`` file of its top-level package (a fix
  anywhere in it counts); for spgkit's own readers and backbones, the module that defines them
  (the rest of spgkit is covered by its version).
- :func:`data_fingerprint`: a hash of what a split is: each image's id, label, boxes and size, and
  the byte size of its image and annotation files (no pixel is read, so it costs a directory walk,
  not a pass over the data). A split without records (SynthWSOL) is made by its arguments and its
  reader's code, which the record holds already: its fingerprint is ``None``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _digest(parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def source_files(obj: Any) -> list[Path]:
    """The files whose source defines ``obj`` (see the module's docstring)."""
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    if module is None or getattr(module, "__file__", None) is None:
        return []
    top = sys.modules.get(module.__name__.split(".")[0])
    if top is None or top.__name__ == "spgkit" or not hasattr(top, "__path__"):
        return [Path(module.__file__)]
    return sorted(p for folder in top.__path__ for p in Path(folder).rglob("*.py"))


def source_fingerprint(obj: Any) -> str:
    """A hash of :func:`source_files` (names and bytes)."""
    files = source_files(obj)
    root = files[0].parent if files else Path()
    return _digest(part for path in files for part in (path.relative_to(root) if path.is_relative_to(root) else path.name, path.read_bytes()))


def _paths(value: Any):
    """The file paths inside a record's format-specific ``extra`` (mask files, trimaps)."""
    if isinstance(value, Path):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _paths(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _paths(item)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1  # a missing file is part of what the split is; reading it fails later, loudly


def data_fingerprint(dataset: Any) -> str | None:
    """A hash of a split's records, or ``None`` for a split without records (see the module)."""
    records = getattr(dataset, "records", None)
    if records is None:
        return None
    parts: list[Any] = [json.dumps(list(getattr(dataset, "class_names", [])))]
    for r in records:
        boxes = np.ascontiguousarray(r.boxes, dtype=np.float64)
        files = [r.path, *_paths(r.extra)]
        parts += [r.image_id, r.label, boxes.tobytes(), r.size, [(p.name, _file_size(p)) for p in files]]
    return _digest(parts)


def versions() -> dict[str, str]:
    """The versions of the libraries a run's numbers depend on."""
    found = {"python": sys.version.split()[0]}
    for name in ("spgkit", "torch", "torchvision", "timm", "numpy", "opencv-python-headless", "pillow"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
