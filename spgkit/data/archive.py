"""Idempotent, atomic extraction of dataset tar archives into a cache directory."""

from __future__ import annotations

import os
import secrets
import shutil
import tarfile
from pathlib import Path

from spgkit.data.sample import DataError

MARKER = ".spgkit-extracted"
"""File written last inside an extraction; its presence is what makes a directory count as done."""

_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar")


def extract(archive_path: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """Extract a tar archive (plain or compressed) once and return the directory holding its members.

    The target is ``cache_dir / <archive name without its tar suffix>``. The archive is unpacked
    into a temporary directory beside the target, a marker file is written, and only then is the
    directory renamed into place, so a crash or a concurrent run never leaves a half-extracted
    target that looks complete. A later call finds the marker and returns at once. Members are
    extracted with tarfile's ``"data"`` filter (no absolute paths, no links out of the target).

    Raises:
        DataError: the archive is missing or unreadable, or the target exists without the marker
            (something else put it there; it is not overwritten).
    """
    archive_path = Path(archive_path)
    cache_dir = Path(cache_dir)
    target = cache_dir / _stem(archive_path.name)
    if (target / MARKER).is_file():
        return target
    if target.exists():
        raise DataError(
            str(target),
            f"exists but was not extracted by spgkit (no {MARKER}); remove it or use another cache_dir",
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp (0700 whatever the umask): a shared cache stays readable by the group.
    partial = cache_dir / f".{target.name}.partial-{secrets.token_hex(6)}"
    partial.mkdir()
    try:
        try:
            with tarfile.open(archive_path) as tar:
                tar.extractall(partial, filter="data")
        except (OSError, tarfile.TarError, EOFError) as error:
            raise DataError(str(archive_path), f"cannot extract ({error})") from error
        (partial / MARKER).write_text(f"{archive_path.name}\n")
        try:
            partial.rename(target)
        except OSError:
            # Another process finished first: its complete copy wins.
            if not (target / MARKER).is_file():
                raise
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return target


def _stem(name: str) -> str:
    for suffix in _TAR_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return f"{name}.extracted"


def resolve_local(spec) -> str:
    """The folder of a :class:`~spgkit.config.LocalData` declaration: ``$env``, else the shared
    archive extracted into the cache, else a :class:`DataError` with the download instructions."""
    if os.environ.get(spec.env):
        path = Path(os.environ[spec.env])
        if not path.is_dir():
            raise DataError(f"${spec.env}", f"{path} is not a folder")
        return str(path)
    shared = Path(os.environ.get("SPGKIT_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    if (shared / spec.archive).is_file():
        cache = Path(os.environ.get("SPGKIT_CACHE", Path.home() / ".cache" / "spgkit"))
        return str(extract(shared / spec.archive, cache) / spec.folder)
    raise DataError(f"dataset not found: set ${spec.env} to its folder. {spec.instructions}")
