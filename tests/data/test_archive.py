"""archive.extract: once, atomically, and never trusting a directory it did not finish."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from spgkit.data import DataError, extract
from spgkit.data.archive import MARKER


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "toy-set.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("toy/a.txt", b"alpha"), ("toy/sub/b.txt", b"beta")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extracts_into_a_folder_named_after_the_archive(archive, tmp_path):
    target = extract(archive, tmp_path / "cache")
    assert target == tmp_path / "cache" / "toy-set"
    assert (target / "toy/a.txt").read_bytes() == b"alpha" and (
        target / "toy/sub/b.txt"
    ).read_bytes() == b"beta"
    assert (target / MARKER).is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["toy-set"]  # no temporary left behind


def test_a_shared_cache_stays_readable_by_the_group(archive, tmp_path):
    old = os.umask(0o027)
    try:
        target = extract(archive, tmp_path / "cache")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o750  # as mkdir leaves it, not 0700


def test_second_call_reuses_the_extraction(archive, tmp_path):
    target = extract(archive, tmp_path / "cache")
    (target / "toy/a.txt").write_bytes(b"edited")
    assert extract(archive, tmp_path / "cache") == target
    assert (target / "toy/a.txt").read_bytes() == b"edited"  # not extracted again


def test_folder_without_marker_is_not_taken_as_done(archive, tmp_path):
    half = tmp_path / "cache" / "toy-set"
    (half / "toy").mkdir(parents=True)
    with pytest.raises(DataError, match=f"^{half}: exists but was not extracted by spgkit"):
        extract(archive, tmp_path / "cache")


def test_corrupt_archive_names_the_file_and_leaves_nothing(archive, tmp_path):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(DataError, match=f"^{broken}: cannot extract"):
        extract(broken, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_plain_tar_suffix(tmp_path):
    path = tmp_path / "plain.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("x.txt")
        tar.addfile(info, io.BytesIO(b""))
    assert (extract(path, tmp_path / "cache") / "x.txt").exists()
