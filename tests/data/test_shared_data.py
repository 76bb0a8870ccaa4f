"""The readers on the real data in ../shared/data (skipped where it is absent)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from spgkit.data import DataError, OxfordPets, TinyImageNet
from spgkit.data.base import read_size

PETS = "oxford-iiit-pet-sample.tar"
TINY = "tiny-imagenet-200-dev.tar.gz"


@pytest.fixture(scope="module")
def pets_sample(shared_archive):
    return shared_archive(PETS) / "oxford-iiit-pet"


@pytest.fixture(scope="module")
def tiny_sample(shared_archive):
    return shared_archive(TINY) / "tiny-imagenet-200"


def test_pets_sample_has_600_images_one_without_a_pet(pets_sample):
    # Abyssinian_34's trimap is all background (a known flaw of the real dataset): by default the
    # reader refuses, naming it; with on_error="skip" it leaves it out and says so.
    with pytest.raises(DataError, match=r"Abyssinian_34\.png: no pet pixels"):
        OxfordPets(pets_sample, "all")
    with pytest.warns(UserWarning, match="1 image"):
        dataset = OxfordPets(pets_sample, "all", on_error="skip")
    assert len(dataset) + len(dataset.skipped) == 600
    assert dataset.skipped == [
        (str(pets_sample / "annotations/trimaps/Abyssinian_34.png"), "no pet pixels (value 1)")
    ]
    assert dataset.class_names == ["Abyssinian", "american_bulldog", "Bengal"]
    assert Counter(r.label for r in dataset.records) == {0: 199, 1: 200, 2: 200}


def test_pets_sample_official_splits(pets_sample):
    trainval, test = OxfordPets(pets_sample, "trainval"), OxfordPets(pets_sample, "test")
    assert (len(trainval), len(test)) == (300, 298)  # list.txt leaves out Abyssinian_34 and _82
    assert not {r.image_id for r in trainval.records} & {r.image_id for r in test.records}
    assert Counter(r.label for r in trainval.records) == {0: 100, 1: 100, 2: 100}


def test_pets_sample_masks_and_boxes_agree(pets_sample, extent):
    with pytest.warns(UserWarning):
        dataset = OxfordPets(pets_sample, "all", on_error="skip")
    for index in range(len(dataset)):
        sample = dataset[index]
        mask, ignore = sample["mask"].numpy().astype(bool), sample["ignore"].numpy().astype(bool)
        height, width = sample["image"].shape[-2:]
        assert mask.shape == (height, width) and not (mask & ignore).any()
        box = extent(mask)
        assert sample["boxes"].tolist() == [box], sample["image_id"]
        assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height


def test_pets_sample_odd_files_decode_to_rgb(pets_sample):
    # Abyssinian_5.jpg is really an RGBA PNG; the reader decodes by content.
    dataset = OxfordPets(pets_sample, "test")
    index = next(i for i, r in enumerate(dataset.records) if r.image_id == "Abyssinian_5")
    image = dataset[index]["image"]
    assert image.shape[0] == 3 and image.dtype == torch.uint8


@pytest.mark.slow
def test_tiny_imagenet_subset(tiny_sample):
    train, val = TinyImageNet(tiny_sample, "train"), TinyImageNet(tiny_sample, "val")
    assert (len(train), len(val)) == (20_000, 5_000)
    assert (
        train.num_classes == val.num_classes == 200
        and train.class_names[train.wnids.index("n01443537")] == "goldfish"
    )
    assert Counter(r.label for r in train.records) == {label: 100 for label in range(200)}
    assert set(r.label for r in val.records) == set(range(200))
    for dataset in (train, val):
        boxes = np.concatenate([r.boxes for r in dataset.records])
        assert boxes.shape == (len(dataset), 4)
        # Every box inside its image, and every image really 64x64 (header read).
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert {read_size(r.path) for r in dataset.records} == {(64, 64)}
    # One-pixel-wide boxes exist in the files (x0 == x1, inclusive): they stay one pixel wide.
    widths = np.concatenate([r.boxes for r in val.records])
    assert ((widths[:, 2] - widths[:, 0]) == 1).any()


@pytest.mark.slow
def test_tiny_imagenet_grayscale_images_decode_to_rgb(tiny_sample):
    val = TinyImageNet(tiny_sample, "val")
    index = next(i for i, r in enumerate(val.records) if Image.open(r.path).mode == "L")
    image = val[index]["image"]
    assert tuple(image.shape) == (3, 64, 64)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
