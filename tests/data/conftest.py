"""Fixtures for the data tests: tiny image files, and the shared real data when it is present."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from spgkit.data import extract

REPO = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """Where the shared real data lives: ``$SPGKIT_SHARED_DATA``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("SPGKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_archive(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``get(name)``: the named shared archive extracted once per session (skips if absent)."""
    cache = tmp_path_factory.mktemp("shared-data")

    def get(name: str) -> Path:
        archive = shared_data_dir() / name
        if not archive.is_file():
            pytest.skip(f"shared data {archive} not present")
        return extract(archive, cache)

    return get


@pytest.fixture
def extent() -> Callable[[Any], list[float]]:
    """``extent(mask)``: the exclusive-convention box of a mask's nonzero pixels, computed
    independently of the library (numpy or torch masks)."""

    def box(mask: Any) -> list[float]:
        array = np.asarray(mask).astype(bool)
        rows, cols = np.flatnonzero(array.any(axis=1)), np.flatnonzero(array.any(axis=0))
        return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]

    return box


@pytest.fixture
def write_image() -> Callable[..., np.ndarray]:
    """``write_image(path, width, height, mode="RGB", seed=0)``: save a random image, return its pixels."""

    def write(path: Path, width: int, height: int, mode: str = "RGB", seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        shape = (height, width) if mode == "L" else (height, width, 3)
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        # PNG is lossless, so tests can compare decoded pixels exactly whatever the file suffix says.
        Image.fromarray(pixels).save(path, format="PNG")
        return pixels

    return write


@pytest.fixture
def write_text() -> Callable[[Path, str], Path]:
    """``write_text(path, text)``: write a text file (dedented lines), creating its folder."""

    def write(path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(line.strip() for line in text.strip().splitlines()) + "\n")
        return path

    return write


# Tiny datasets in each reader's exact format, shared by test_readers and test_bad_input.


@pytest.fixture
def cub_root(tmp_path, write_image, write_text):
    root = tmp_path / "CUB_200_2011"
    write_text(root / "classes.txt", "1 001.Albatross\n2 002.Auklet")
    write_text(
        root / "images.txt",
        "1 001.Albatross/a.jpg\n2 002.Auklet/b.jpg\n3 002.Auklet/c.jpg",
    )
    write_text(root / "image_class_labels.txt", "1 1\n2 2\n3 2")
    write_text(root / "bounding_boxes.txt", "1 3.0 4.0 10.0 6.0\n2 0.0 0.0 40.0 30.0\n3 5.5 1.0 2.0 2.0")
    write_text(root / "train_test_split.txt", "1 1\n2 0\n3 1")
    write_image(root / "images/001.Albatross/a.jpg", 40, 30, seed=1)
    write_image(root / "images/002.Auklet/b.jpg", 40, 30, mode="L", seed=2)
    write_image(root / "images/002.Auklet/c.jpg", 20, 10, seed=3)
    return root


VOC = """<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
VOC_OBJECT = (
    "<object><name>{name}</name>"
    "<bndbox><xmin>{0}</xmin><ymin>{1}</ymin><xmax>{2}</xmax><ymax>{3}</ymax></bndbox></object>"
)


def voc(width: int, height: int, *objects: tuple[str, tuple[int, int, int, int]]) -> str:
    return VOC.format(
        w=width, h=height, objects="\n".join(VOC_OBJECT.format(*box, name=name) for name, box in objects)
    )


@pytest.fixture
def imagenet_root(tmp_path, write_image, write_text):
    root = tmp_path / "ILSVRC"
    # Created in non-sorted order: labels must follow the sorted wnids, not creation order.
    write_image(root / "train/n02000000/x1.JPEG", 8, 8)
    write_image(root / "train/n01000000/y1.JPEG", 8, 8)
    write_image(root / "train/n01000000/y2.JPEG", 8, 8)
    (root / "train/n01000000/notes.txt").write_text("not an image")
    write_image(root / "val/ILSVRC2012_val_00000001.JPEG", 50, 40)
    write_image(root / "val/ILSVRC2012_val_00000002.JPEG", 30, 20)
    write_text(
        root / "val/ILSVRC2012_val_00000001.xml",
        voc(50, 40, ("n02000000", (0, 5, 49, 39)), ("n02000000", (10, 10, 19, 14))),
    )
    write_text(root / "val/ILSVRC2012_val_00000002.xml", voc(30, 20, ("n01000000", (2, 3, 4, 5))))
    return root


@pytest.fixture
def metadata_boxes(tmp_path, write_image, write_text):
    meta, images = tmp_path / "metadata/CUB", tmp_path / "dataset/CUB"
    write_image(images / "001.A/a.jpg", 40, 30)
    write_image(images / "002.B/b.jpg", 20, 10)
    write_text(meta / "test/image_ids.txt", "002.B/b.jpg\n001.A/a.jpg")
    write_text(meta / "test/class_labels.txt", "001.A/a.jpg,0\n002.B/b.jpg,2")
    write_text(meta / "test/image_sizes.txt", "001.A/a.jpg,40,30\n002.B/b.jpg,20,10")
    write_text(
        meta / "test/localization.txt",
        "001.A/a.jpg,3,4,12,9\n002.B/b.jpg,0,0,20,10\n001.A/a.jpg,20,0,39,29",
    )
    return meta, images


@pytest.fixture
def tiny_root(tmp_path, write_image, write_text):
    root = tmp_path / "tiny-imagenet-200"
    write_text(root / "wnids.txt", "n09000000\nn01000000")
    write_text(root / "words.txt", "n01000000\tgoldfish, Carassius auratus\nn05000000\tunused")
    for wnid, count in (("n09000000", 2), ("n01000000", 1)):
        for n in range(count):
            write_image(root / f"train/{wnid}/images/{wnid}_{n}.JPEG", 64, 64, seed=n)
    write_text(
        root / "train/n09000000/n09000000_boxes.txt",
        "n09000000_0.JPEG\t0\t0\t63\t63\nn09000000_1.JPEG\t5\t6\t5\t9",
    )
    write_text(root / "train/n01000000/n01000000_boxes.txt", "n01000000_0.JPEG\t1\t2\t30\t40")
    write_image(root / "val/images/val_0.JPEG", 64, 64, mode="L")
    write_image(root / "val/images/val_1.JPEG", 64, 64)
    write_text(
        root / "val/val_annotations.txt",
        "val_1.JPEG\tn01000000\t10\t11\t12\t13\nval_0.JPEG\tn09000000\t0\t32\t44\t62",
    )
    return root


def write_trimap(path, trimap: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(trimap.astype(np.uint8)).save(path)


@pytest.fixture
def pets_root(tmp_path, write_image, write_text):
    root = tmp_path / "oxford-iiit-pet"
    for stem in ("Bengal_1", "american_bulldog_7", "Abyssinian_3", "Abyssinian_4"):
        write_image(root / f"images/{stem}.jpg", 10, 8)
        trimap = np.full((8, 10), 2)
        trimap[2:6, 3:7] = 3  # border ring around the pet
        trimap[3:5, 4:6] = 1
        write_trimap(root / f"annotations/trimaps/{stem}.png", trimap)
    write_text(root / "annotations/trainval.txt", "Bengal_1 6 1 6\nAbyssinian_3 1 1 1")
    write_text(root / "annotations/test.txt", "american_bulldog_7 2 2 1")
    return root


@pytest.fixture
def folder_csv(tmp_path, write_image, write_text):
    root = tmp_path / "photos"
    write_image(root / "birds/1.jpg", 30, 20)
    write_image(root / "cats/2.png", 16, 16)
    csv_path = write_text(
        tmp_path / "boxes.csv",
        """x0,y0,image,x1,y1,label,note
        1,2,birds/1.jpg,10.5,12,sparrow,first
        20,0,birds/1.jpg,30,20,sparrow,
        0,0,cats/2.png,16,16,cat,""",
    )
    return root, csv_path
