"""Each reader on tiny files written in its exact format: labels, boxes, masks, ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from spgkit.data import (
    CUB,
    DataError,
    FolderCSV,
    ImageNet,
    OxfordPets,
    SynthWSOL,
    TinyImageNet,
    WSOLMetadata,
)


def boxes_of(sample) -> list[list[float]]:
    return sample["boxes"].tolist()


def check_contract(sample, height: int, width: int) -> None:
    """The parts of the sample contract every reader shares."""
    assert isinstance(sample["image"], tv_tensors.Image)
    assert sample["image"].dtype == torch.uint8 and tuple(sample["image"].shape) == (3, height, width)
    assert isinstance(sample["boxes"], tv_tensors.BoundingBoxes)
    assert sample["boxes"].format.name == "XYXY" and tuple(sample["boxes"].canvas_size) == (height, width)
    assert isinstance(sample["label"], int) and isinstance(sample["image_id"], str)


# --- CUB-200-2011 -----------------------------------------------------------------------------


def test_cub_splits_labels_and_xywh_boxes(cub_root):
    train = CUB(cub_root, "train")
    test = CUB(cub_root, "test")
    assert train.class_names == ["001.Albatross", "002.Auklet"] and train.num_classes == 2
    assert [r.image_id for r in train.records] == ["001.Albatross/a.jpg", "002.Auklet/c.jpg"]
    assert [r.image_id for r in test.records] == ["002.Auklet/b.jpg"]
    first, second = train[0], train[1]
    check_contract(first, 30, 40)
    assert first["label"] == 0 and second["label"] == 1
    # x y w h -> x0 = x, x1 = x + w
    assert boxes_of(first) == [[3.0, 4.0, 13.0, 10.0]]
    assert boxes_of(second) == [[5.5, 1.0, 7.5, 3.0]]
    assert first["mask"] is None and first["ignore"] is None


def test_cub_grayscale_decodes_to_three_equal_channels(cub_root):
    sample = CUB(cub_root, "test")[0]
    image = sample["image"]
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    expected = np.array(Image.open(cub_root / "images/002.Auklet/b.jpg"))
    assert torch.equal(image[0], torch.from_numpy(expected))


def test_cub_all_split_and_transform_applied(cub_root):
    seen = []
    dataset = CUB(cub_root, "all", transform=lambda sample: seen.append(sample["image_id"]) or "done")
    assert len(dataset) == 3
    assert dataset[2] == "done" and seen == ["002.Auklet/c.jpg"]


# --- ILSVRC -----------------------------------------------------------------------------------


def test_imagenet_train_labels_follow_sorted_wnids_and_carry_no_boxes(imagenet_root):
    train = ImageNet(imagenet_root, "train")
    assert train.class_names == ["n01000000", "n02000000"]
    assert [(r.image_id, r.label) for r in train.records] == [
        ("n01000000/y1.JPEG", 0),
        ("n01000000/y2.JPEG", 0),
        ("n02000000/x1.JPEG", 1),
    ]
    sample = train[2]
    check_contract(sample, 8, 8)
    assert sample["boxes"].shape == (0, 4)


def test_imagenet_val_class_from_xml_and_inclusive_boxes(imagenet_root):
    val = ImageNet(imagenet_root, "val")
    first, second = val[0], val[1]
    check_contract(first, 40, 50)
    assert first["label"] == 1 and second["label"] == 0
    # xmax/ymax inclusive -> +1; a box reaching the last pixel ends at the image border.
    assert boxes_of(first) == [[0.0, 5.0, 50.0, 40.0], [10.0, 10.0, 20.0, 15.0]]
    assert boxes_of(second) == [[2.0, 3.0, 5.0, 6.0]]


def test_imagenet_val_with_separate_xml_dir_and_explicit_wnids(imagenet_root, tmp_path):
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    for xml in (imagenet_root / "val").glob("*.xml"):
        xml.rename(xml_dir / xml.name)
    val = ImageNet(imagenet_root, "val", xml_dir=xml_dir, wnids=["n02000000", "n01000000", "n03000000"])
    assert val.class_names == ["n01000000", "n02000000", "n03000000"]
    assert [r.label for r in val.records] == [1, 0]


# --- WSOL benchmark metadata ------------------------------------------------------------------


def test_metadata_boxes_several_per_image_inclusive(metadata_boxes):
    meta, images = metadata_boxes
    dataset = WSOLMetadata(meta, images, "test", num_classes=3)
    assert [r.image_id for r in dataset.records] == ["002.B/b.jpg", "001.A/a.jpg"]  # image_ids.txt order
    b, a = dataset[0], dataset[1]
    check_contract(a, 30, 40)
    assert (a["label"], b["label"]) == (0, 2)
    assert boxes_of(a) == [[3.0, 4.0, 13.0, 10.0], [20.0, 0.0, 40.0, 30.0]]
    # x1 == width (the benchmark's CUB boxes end at x + w) stays at the border.
    assert boxes_of(b) == [[0.0, 0.0, 20.0, 10.0]]
    assert dataset.class_names == ["0", "1", "2"]


def test_metadata_without_localization_gives_no_boxes(metadata_boxes):
    meta, images = metadata_boxes
    (meta / "test/localization.txt").unlink()
    sample = WSOLMetadata(meta, images, "test", class_names=["a", "b", "c"])[1]
    assert sample["boxes"].shape == (0, 4) and sample["label"] == 0


def test_metadata_masks_union_ignore_and_instance_boxes(tmp_path, write_image, write_text):
    meta, images = tmp_path / "metadata/OpenImages", tmp_path / "dataset/OpenImages"
    write_image(images / "test/Cat/x.jpg", 12, 8)
    first, second, ignore = (
        np.zeros((8, 12), np.uint8),
        np.zeros((8, 12), np.uint8),
        np.zeros((8, 12), np.uint8),
    )
    first[1:3, 2:5] = 255
    second[5:8, 9:12] = 255
    ignore[0:4, 0:8] = 255  # overlaps the first instance: those pixels stay object, not ignored
    for name, array in (("m1.png", first), ("m2.png", second), ("ig.png", ignore)):
        (images / "masks").mkdir(exist_ok=True)
        Image.fromarray(array).save(images / "masks" / name)
    write_text(meta / "test/image_ids.txt", "test/Cat/x.jpg")
    write_text(meta / "test/class_labels.txt", "test/Cat/x.jpg,1")
    write_text(meta / "test/image_sizes.txt", "test/Cat/x.jpg,12,8")
    (meta / "test/localization.txt").write_text(
        "test/Cat/x.jpg,masks/m1.png,masks/ig.png\ntest/Cat/x.jpg,masks/m2.png,\n"
    )
    sample = WSOLMetadata(meta, images, "test", num_classes=2)[0]
    mask, ignore_out = sample["mask"].numpy().astype(bool), sample["ignore"].numpy().astype(bool)
    assert np.array_equal(mask, (first > 0) | (second > 0))
    assert np.array_equal(ignore_out, (ignore > 0) & ~mask)
    assert boxes_of(sample) == [[2.0, 1.0, 5.0, 3.0], [9.0, 5.0, 12.0, 8.0]]


# --- Tiny ImageNet ----------------------------------------------------------------------------


def test_tiny_imagenet_train_inclusive_boxes_and_names(tiny_root):
    train = TinyImageNet(tiny_root, "train")
    assert train.wnids == ["n01000000", "n09000000"]
    assert train.class_names == ["goldfish", "n09000000"]
    assert [(r.image_id, r.label) for r in train.records] == [
        ("n01000000_0.JPEG", 0),
        ("n09000000_0.JPEG", 1),
        ("n09000000_1.JPEG", 1),
    ]
    check_contract(train[0], 64, 64)
    assert boxes_of(train[0]) == [[1.0, 2.0, 31.0, 41.0]]
    assert boxes_of(train[1]) == [[0.0, 0.0, 64.0, 64.0]]
    assert boxes_of(train[2]) == [[5.0, 6.0, 6.0, 10.0]]  # a one-pixel-wide box stays one pixel wide


def test_tiny_imagenet_val_labels_from_wnids(tiny_root):
    val = TinyImageNet(tiny_root, "val")
    assert [(r.image_id, r.label) for r in val.records] == [("val_0.JPEG", 1), ("val_1.JPEG", 0)]
    sample = val[0]
    check_contract(sample, 64, 64)
    assert boxes_of(sample) == [[0.0, 32.0, 45.0, 63.0]]


# --- Oxford-IIIT Pet --------------------------------------------------------------------------


def test_pets_labels_rank_breeds_ignoring_case(pets_root):
    every = OxfordPets(pets_root, "all")
    # The dataset's own id order (1 Abyssinian, 2 american_bulldog, 6 Bengal), not ASCII order.
    assert every.class_names == ["Abyssinian", "american_bulldog", "Bengal"]
    # "all" includes Abyssinian_4, which no list file names.
    assert {r.image_id: r.label for r in every.records} == {
        "Abyssinian_3": 0,
        "Abyssinian_4": 0,
        "american_bulldog_7": 1,
        "Bengal_1": 2,
    }
    assert [r.image_id for r in OxfordPets(pets_root, "trainval").records] == ["Bengal_1", "Abyssinian_3"]
    test = OxfordPets(pets_root, "test")
    assert test.class_names == every.class_names and test[0]["label"] == 1


def test_pets_trimap_to_mask_ignore_and_box(pets_root):
    sample = OxfordPets(pets_root, "trainval")[0]
    check_contract(sample, 8, 10)
    mask, ignore = sample["mask"].numpy(), sample["ignore"].numpy()
    expected_mask = np.zeros((8, 10), np.uint8)
    expected_mask[3:5, 4:6] = 1
    expected_border = np.zeros((8, 10), np.uint8)
    expected_border[2:6, 3:7] = 1
    expected_border[3:5, 4:6] = 0
    assert np.array_equal(mask, expected_mask) and np.array_equal(ignore, expected_border)
    assert boxes_of(sample) == [[4.0, 3.0, 6.0, 5.0]]


def test_pets_border_as_object(pets_root):
    sample = OxfordPets(pets_root, "trainval", border="object")[0]
    assert sample["ignore"] is None
    assert int(sample["mask"].sum()) == 16 and boxes_of(sample) == [[3.0, 2.0, 7.0, 6.0]]


# --- Folder + CSV -----------------------------------------------------------------------------


def test_folder_csv_rows_group_into_images(folder_csv):
    root, csv_path = folder_csv
    dataset = FolderCSV(root, csv_path=csv_path)
    assert dataset.class_names == ["cat", "sparrow"]
    bird, cat = dataset[0], dataset[1]
    check_contract(bird, 20, 30)
    assert (bird["image_id"], bird["label"], cat["label"]) == ("birds/1.jpg", 1, 0)
    assert boxes_of(bird) == [[1.0, 2.0, 10.5, 12.0], [20.0, 0.0, 30.0, 20.0]]
    assert boxes_of(cat) == [[0.0, 0.0, 16.0, 16.0]]


def test_folder_csv_explicit_class_names_fix_label_order(folder_csv):
    root, csv_path = folder_csv
    dataset = FolderCSV(root, csv_path=csv_path, class_names=["sparrow", "dog", "cat"])
    assert [r.label for r in dataset.records] == [0, 2] and dataset.num_classes == 3


def test_folder_csv_splits_share_the_class_numbering_of_train_csv(tmp_path, write_image, write_text):
    # test.csv lacks "ant": numbering it from its own labels would call "cat" class 0 there but 1 in train.
    for name in ("a.png", "b.png", "c.png"):
        write_image(tmp_path / name, 8, 8)
    write_text(tmp_path / "train.csv", "image,label,x0,y0,x1,y1\na.png,ant,0,0,4,4\nb.png,cat,0,0,4,4")
    write_text(tmp_path / "test.csv", "image,label,x0,y0,x1,y1\nc.png,cat,1,1,5,5")
    train, test = FolderCSV(tmp_path, "train"), FolderCSV(tmp_path, split="test")
    assert train.class_names == test.class_names == ["ant", "cat"]
    assert test[0]["label"] == train[1]["label"] == 1
    write_text(tmp_path / "classes.txt", "cat\nant\n\n")
    assert FolderCSV(tmp_path, "test").class_names == ["cat", "ant"]
    write_text(tmp_path / "val.csv", "image,label,x0,y0,x1,y1\nc.png,dog,1,1,5,5")
    with pytest.raises(DataError, match=r"val\.csv:2.*'dog' is not one of the 2 class names"):
        FolderCSV(tmp_path, "val")
    with pytest.raises(DataError, match=r"nope\.csv.*CSV file not found"):
        FolderCSV(tmp_path, "nope")


def test_decoded_pixels_match_the_file(folder_csv, write_image):
    root, csv_path = folder_csv
    pixels = write_image(root / "birds/1.jpg", 30, 20, seed=7)
    image = FolderCSV(root, csv_path=csv_path)[0]["image"]
    assert torch.equal(image, torch.from_numpy(pixels).permute(2, 0, 1))


def test_datasets_register_through_the_hook_like_heads(registry):
    assert {name: entry.obj for name, entry in registry.datasets.items()} == {
        "synthwsol": SynthWSOL,
        "cub": CUB,
        "imagenet": ImageNet,
        "wsol_metadata": WSOLMetadata,
        "tiny_imagenet": TinyImageNet,
        "pets": OxfordPets,
        "folder_csv": FolderCSV,
    }
    assert {entry.plugin for entry in registry.datasets.values()} == {"spgkit (core datasets)"}


def test_sixteen_bit_png_is_read_at_its_depth(tmp_path):
    from spgkit.data.base import load_rgb

    # 16-bit grayscale (PIL mode I;16): convert("RGB") would clip 1000, 32768 and 65535 to 255.
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    rgb = load_rgb(tmp_path / "deep.png")
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert rgb[0, :, 0].tolist() == [0, 4, 128, 255]  # round(v / 65535 * 255)
    assert (rgb[..., 0] == rgb[..., 2]).all()
    # 8-bit images are unchanged.
    Image.fromarray(np.array([[0, 7, 255]], dtype=np.uint8)).save(tmp_path / "plain.png")
    assert load_rgb(tmp_path / "plain.png")[0, :, 1].tolist() == [0, 7, 255]


def test_csv_with_a_byte_order_mark(tmp_path, write_image):
    root = tmp_path / "photos"
    write_image(root / "birds/1.png", 30, 20)
    # What a spreadsheet writes: a UTF-8 byte-order mark before the header.
    (root / "train.csv").write_bytes("\ufeffimage,label,x0,y0,x1,y1\nbirds/1.png,sparrow,1,2,10,12\n".encode("utf-8"))
    sample = FolderCSV(root, split="train")[0]
    assert sample["label"] == 0 and sample["boxes"].tolist() == [[1.0, 2.0, 10.0, 12.0]]
