"""Real files no one here wrote, and unusual or corrupt inputs: the WSOL benchmark's OpenImages
metadata as shipped, very large images (Pillow's decompression-bomb guard), errors raised in
DataLoader workers, and unreadable annotation files. Each fails with one line naming the file."""

from __future__ import annotations

import pickle
import sys
import warnings

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

import spgkit.data.base as base
from spgkit.data import CUB, DataError, FolderCSV, ImageNet, OxfordPets, TinyImageNet, WSOLMetadata
from spgkit.data.base import BadLine, load_label_map, load_rgb, read_size


def one_line_error(call, prefix: str) -> str:
    """The message of the DataError ``call()`` raises, checked to be one line starting with ``prefix``."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message.startswith(prefix), message
    return message


# --- the WSOL benchmark's OpenImages metadata, as shipped -------------------------------------
# metadata/OpenImages/<split>/ in clovaai/wsolevaluation: image_sizes.txt is an empty file in every
# split, train/localization.txt is an empty file, and the other files end without a newline.
# localization.txt lines are "<image>,<instance mask>,<ignore mask>", the ignore mask on the
# image's first line only.

IMAGE_A = "test/01226z/7af766bd43da900b.jpg"
IMAGE_B = "test/01226z/973645e9516726b3.jpg"


def write_exact(path, text: str) -> None:
    """Write ``text`` byte for byte (the benchmark's files have no final newline; empty is 0 bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())


def save_mask(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def openimages(tmp_path, write_image):
    """metadata/OpenImages with a train split (2 images, no annotation) and a test split (2 images
    with masks); images under dataset/OpenImages, masks under mask/OpenImages."""
    meta = tmp_path / "metadata/OpenImages"
    images, masks = tmp_path / "dataset/OpenImages", tmp_path / "mask/OpenImages"
    write_image(images / "train/01226z/ed9d2feb6d44cff3.jpg", 7, 5, seed=1)
    write_image(images / "train/0ph39/cbc0248166c1bfb9.jpg", 6, 4, seed=2)
    write_exact(
        meta / "train/image_ids.txt", "train/01226z/ed9d2feb6d44cff3.jpg\ntrain/0ph39/cbc0248166c1bfb9.jpg"
    )
    write_exact(
        meta / "train/class_labels.txt",
        "train/01226z/ed9d2feb6d44cff3.jpg,0\ntrain/0ph39/cbc0248166c1bfb9.jpg,99",
    )
    write_exact(meta / "train/image_sizes.txt", "")
    write_exact(meta / "train/localization.txt", "")

    write_image(images / IMAGE_A, 6, 4, seed=3)
    write_image(images / IMAGE_B, 5, 3, seed=4)
    first, second, ignore_a = (np.zeros((4, 6), np.uint8) for _ in range(3))
    first[0:2, 0:2] = 255  # columns 0..1, rows 0..1
    second[2:4, 4:6] = 255  # columns 4..5, rows 2..3
    ignore_a[0:3, 0:5] = 255  # overlaps the first instance: those pixels stay object
    only, ignore_b = np.zeros((3, 5), np.uint8), np.zeros((3, 5), np.uint8)
    only[1, 1:4] = 255
    ignore_b[:, 4] = 255
    stem_a, stem_b = IMAGE_A[: -len(".jpg")], IMAGE_B[: -len(".jpg")]
    for name, array in (
        (f"{stem_a}_m01226z_6554d965.png", first),
        (f"{stem_a}_m01226z_8856c605.png", second),
        (f"{stem_a}_ignore.png", ignore_a),
        (f"{stem_b}_m01226z_9ad378d4.png", only),
        (f"{stem_b}_ignore.png", ignore_b),
    ):
        save_mask(masks / name, array)
    write_exact(meta / "test/image_ids.txt", f"{IMAGE_A}\n{IMAGE_B}")
    write_exact(meta / "test/class_labels.txt", f"{IMAGE_A},0\n{IMAGE_B},99")
    write_exact(meta / "test/image_sizes.txt", "")
    write_exact(
        meta / "test/localization.txt",
        f"{IMAGE_A},{stem_a}_m01226z_6554d965.png,{stem_a}_ignore.png\n"
        f"{IMAGE_A},{stem_a}_m01226z_8856c605.png,\n"
        f"{IMAGE_B},{stem_b}_m01226z_9ad378d4.png,{stem_b}_ignore.png",
    )
    return meta, images, masks


def test_openimages_train_split_reads_without_sizes_or_annotations(openimages, write_image):
    meta, images, masks = openimages
    train = WSOLMetadata(meta, images, "train", num_classes=100, mask_root=masks)
    assert [(r.image_id, r.label, r.size) for r in train.records] == [
        ("train/01226z/ed9d2feb6d44cff3.jpg", 0, None),
        ("train/0ph39/cbc0248166c1bfb9.jpg", 99, None),
    ]
    sample = train[1]
    expected = write_image(images / "train/0ph39/cbc0248166c1bfb9.jpg", 6, 4, seed=2)
    assert np.array_equal(sample["image"].numpy().transpose(1, 2, 0), expected)
    assert tuple(sample["boxes"].canvas_size) == (4, 6) and sample["boxes"].shape == (0, 4)
    assert sample["mask"] is None and sample["ignore"] is None and sample["label"] == 99


def test_openimages_test_split_masks_take_the_size_of_the_decoded_image(openimages):
    meta, images, masks = openimages
    test = WSOLMetadata(meta, images, "test", num_classes=100, mask_root=masks)
    a, b = test[0], test[1]
    assert (a["image_id"], a["label"], b["image_id"], b["label"]) == (IMAGE_A, 0, IMAGE_B, 99)
    assert tuple(a["image"].shape) == (3, 4, 6) and tuple(b["image"].shape) == (3, 3, 5)
    assert a["mask"].numpy().tolist() == [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 1],
        [0, 0, 0, 0, 1, 1],
    ]
    assert a["ignore"].numpy().tolist() == [  # the ignore box less the object
        [0, 0, 1, 1, 1, 0],
        [0, 0, 1, 1, 1, 0],
        [1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ]
    assert a["boxes"].tolist() == [[0.0, 0.0, 2.0, 2.0], [4.0, 2.0, 6.0, 4.0]]  # one per instance
    assert b["mask"].numpy().tolist() == [[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]]
    assert b["ignore"].numpy().tolist() == [[0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1]]
    assert b["boxes"].tolist() == [[1.0, 1.0, 4.0, 2.0]]


def test_openimages_mask_of_another_size_than_its_image(openimages):
    meta, images, masks = openimages
    mask = masks / f"{IMAGE_B[: -len('.jpg')]}_ignore.png"
    save_mask(mask, np.zeros((3, 7), np.uint8))
    test = WSOLMetadata(meta, images, "test", num_classes=100, mask_root=masks)
    assert one_line_error(lambda: test[1], f"{mask}: ") == f"{mask}: mask is 7x3, its image 5x3"


@pytest.fixture
def boxes_without_sizes(metadata_boxes):
    """The CUB-style fixture (a.jpg 40x30, b.jpg 20x10) with an empty image_sizes.txt."""
    meta, images = metadata_boxes
    (meta / "test/image_sizes.txt").write_bytes(b"")
    return meta, images


def test_boxes_without_sizes_are_converted_with_the_decoded_size(boxes_without_sizes):
    meta, images = boxes_without_sizes
    dataset = WSOLMetadata(meta, images, "test", num_classes=3)
    b, a = dataset[0], dataset[1]
    # localization.txt: a "3,4,12,9" and "20,0,39,29" (inclusive), b "0,0,20,10" (x1 == width).
    assert a["boxes"].tolist() == [[3.0, 4.0, 13.0, 10.0], [20.0, 0.0, 40.0, 30.0]]
    assert b["boxes"].tolist() == [[0.0, 0.0, 20.0, 10.0]]
    assert tuple(a["boxes"].canvas_size) == (30, 40) and tuple(b["boxes"].canvas_size) == (10, 20)
    # Before decoding, a record holds x1 + 1, y1 + 1 of its lines (what a data fingerprint hashes).
    assert dataset.records[0].boxes.tolist() == [[0.0, 0.0, 21.0, 11.0]] and dataset.records[0].size is None


def test_boxes_without_sizes_outside_the_decoded_image_fail_at_their_line(boxes_without_sizes):
    meta, images = boxes_without_sizes
    lines = (meta / "test/localization.txt").read_text().splitlines()
    lines[1] = "002.B/b.jpg,0,0,24,5"  # b.jpg is 20x10
    (meta / "test/localization.txt").write_text("\n".join(lines))
    dataset = WSOLMetadata(meta, images, "test", num_classes=3)
    location = f"{meta / 'test/localization.txt'}:2"
    message = one_line_error(lambda: dataset[0], f"{location}: ")
    assert message == f"{location}: box (0, 0, 25, 6) lies outside the 20x10 image"
    assert dataset[1]["boxes"].shape == (2, 4)  # the other image is unaffected


def test_boxes_without_sizes_checked_at_construction_as_far_as_possible(boxes_without_sizes):
    meta, images = boxes_without_sizes
    path = meta / "test/localization.txt"
    path.write_text(path.read_text().replace("001.A/a.jpg,3,4,12,9", "001.A/a.jpg,3,4,2,9"))
    message = one_line_error(lambda: WSOLMetadata(meta, images, "test", num_classes=3), f"{path}:1: ")
    assert message == f"{path}:1: box (3, 4, 3, 10) is empty (needs x0 < x1 and y0 < y1)"
    path.write_text(path.read_text().replace("001.A/a.jpg,3,4,2,9", "001.A/a.jpg,-3,4,12,9"))
    message = one_line_error(lambda: WSOLMetadata(meta, images, "test", num_classes=3), f"{path}:1: ")
    assert "starts at a negative coordinate" in message


def test_missing_image_sizes_file_reads_like_an_empty_one(boxes_without_sizes):
    meta, images = boxes_without_sizes
    (meta / "test/image_sizes.txt").unlink()
    dataset = WSOLMetadata(meta, images, "test", num_classes=3)
    assert dataset[0]["boxes"].tolist() == [[0.0, 0.0, 20.0, 10.0]]


def test_sizes_given_for_some_images_only(metadata_boxes):
    meta, images = metadata_boxes
    (meta / "test/image_sizes.txt").write_text("001.A/a.jpg,40,30\n")
    dataset = WSOLMetadata(meta, images, "test", num_classes=3)
    assert [r.size for r in dataset.records] == [None, (30, 40)]
    assert dataset[0]["boxes"].tolist() == [[0.0, 0.0, 20.0, 10.0]]


def test_localization_with_only_blank_lines_is_a_split_without_annotations(metadata_boxes):
    meta, images = metadata_boxes
    (meta / "test/localization.txt").write_text("\n \n")
    sample = WSOLMetadata(meta, images, "test", num_classes=3)[1]
    assert sample["boxes"].shape == (0, 4) and sample["mask"] is None


# --- very large images: Pillow's decompression-bomb guard -------------------------------------


def jpeg_claiming(path, width: int, height: int) -> None:
    """A small JPEG whose frame header (SOF0) claims ``width`` x ``height`` (header-only reads)."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format="JPEG")
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))


def test_hundred_megapixel_photo_header_reads_without_warning(tmp_path, monkeypatch):
    path = tmp_path / "gfx100.jpg"
    jpeg_claiming(path, 11648, 8736)  # 101,756,928 pixels: over Pillow's 89,478,485, which warns
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89478485)  # Pillow's default
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the setups where Pillow's warning is an error
        assert read_size(path) == (8736, 11648)
    assert Image.MAX_IMAGE_PIXELS == 89478485  # Pillow's own limit is left as it was


def test_image_over_the_cap_is_refused_before_decoding(tmp_path, folder_csv):
    path = tmp_path / "bomb.jpg"
    jpeg_claiming(path, 20000, 20000)  # 400 million pixels: over 250 million, and over Pillow's 2 x 89M
    expected = (
        f"{path}: image of 20000x20000 = 400,000,000 pixels is over the limit of 250,000,000 pixels "
        "(spgkit.data.base.MAX_IMAGE_PIXELS; raise it if the image is genuine)"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert one_line_error(lambda: load_rgb(path), f"{path}: ") == expected
        assert one_line_error(lambda: load_label_map(path), f"{path}: ") == expected
        with pytest.raises(BadLine, match="400,000,000 pixels is over the limit"):
            read_size(path)
    root, csv_path = folder_csv  # construction reads the header: the error names the CSV line
    jpeg_claiming(root / "birds/1.jpg", 20000, 20000)
    message = one_line_error(lambda: FolderCSV(root, csv_path=csv_path), f"{csv_path}:2: ")
    assert message.endswith(f"image file {root / 'birds/1.jpg'}: " + expected[len(f"{path}: ") :])


@pytest.mark.parametrize("pil_limit", [700, 500])  # 40x30 = 1200 pixels: Pillow warns (700), refuses (500)
def test_images_over_pillows_limit_decode_under_the_readers_cap(tmp_path, write_image, monkeypatch, pil_limit):
    path = tmp_path / "photo.png"
    pixels = write_image(path, 40, 30, seed=5)
    save_mask(tmp_path / "mask.png", (pixels[..., 0] > 127).astype(np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(load_rgb(path), pixels)
        assert np.array_equal(load_label_map(tmp_path / "mask.png"), pixels[..., 0] > 127)
        assert read_size(path) == (30, 40)
    assert Image.MAX_IMAGE_PIXELS == pil_limit


@pytest.mark.parametrize(("cap", "count"), [(1000, "40x30 = 1,200"), (500, "1,200")])
def test_readers_cap_is_one_line_with_the_pixel_count(tmp_path, write_image, monkeypatch, cap, count):
    # Over the cap (1000), the readers refuse; over twice it (500), Pillow refuses inside open().
    path = tmp_path / "photo.png"
    write_image(path, 40, 30)
    monkeypatch.setattr(base, "MAX_IMAGE_PIXELS", cap)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        message = one_line_error(lambda: load_rgb(path), f"{path}: ")
    assert message == (
        f"{path}: image of {count} pixels is over the limit of {cap:,} pixels "
        "(spgkit.data.base.MAX_IMAGE_PIXELS; raise it if the image is genuine)"
    )
    monkeypatch.setattr(base, "MAX_IMAGE_PIXELS", None)  # None lifts the cap
    assert load_rgb(path).shape == (30, 40, 3)


def test_other_decoder_warnings_still_reach_the_caller(tmp_path, write_image, monkeypatch):
    path = tmp_path / "photo.png"
    write_image(path, 4, 3)
    open_image = Image.open

    def warning_open(*args, **kwargs):
        warnings.warn("Corrupt EXIF data", UserWarning)  # as Pillow's decoders warn
        return open_image(*args, **kwargs)

    monkeypatch.setattr(Image, "open", warning_open)
    with pytest.warns(UserWarning, match="Corrupt EXIF data"):
        assert load_rgb(path).shape == (3, 4, 3)


# --- errors raised in DataLoader workers ------------------------------------------------------


def first_item(batch):
    return batch


def test_truncated_image_in_a_dataloader_worker_is_the_same_one_line_error(folder_csv):
    root, csv_path = folder_csv
    path = root / "birds/1.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
        path, format="JPEG"
    )
    path.write_bytes(path.read_bytes()[:-200])
    dataset = FolderCSV(root, csv_path=csv_path)
    with pytest.raises(DataError) as here:
        dataset[0]
    loader = DataLoader(dataset, batch_size=None, num_workers=1, collate_fn=first_item)
    with pytest.raises(DataError) as there:
        next(iter(loader))
    assert type(there.value) is DataError
    assert str(there.value) == str(here.value)
    assert str(there.value).startswith(f"{path}: cannot decode image (") and "\n" not in str(there.value)


def test_data_error_keeps_only_its_line_of_torchs_worker_text():
    from torch._utils import ExceptionWrapper

    try:
        try:
            raise KeyError("cause")
        except KeyError as cause:
            raise DataError("/data/x.png", "cannot decode image (broken data stream)") from cause
    except DataError:
        wrapper = ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 0")
    with pytest.raises(DataError) as info:
        wrapper.reraise()
    assert str(info.value) == "/data/x.png: cannot decode image (broken data stream)"
    assert info.value.reason == str(info.value) and info.value.location is None


def test_data_error_messages_are_one_line_and_pickle_whole():
    error = DataError("/data/x.png", "cannot decode image (first line\nsecond line)")
    assert str(error) == "/data/x.png: cannot decode image (first line second line)"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is DataError and str(copy) == str(error)
    assert (copy.location, copy.reason) == ("/data/x.png", "cannot decode image (first line second line)")
    bare = pickle.loads(pickle.dumps(DataError("Caught nothing: a plain message")))
    assert (bare.location, bare.reason, str(bare)) == (None, "Caught nothing: a plain message", str(bare))


# --- unreadable or inconsistent annotation files ----------------------------------------------


def test_annotation_file_that_is_a_directory(cub_root):
    (cub_root / "classes.txt").unlink()
    (cub_root / "classes.txt").mkdir()
    path = cub_root / "classes.txt"
    message = one_line_error(lambda: CUB(cub_root), f"{path}: ")
    assert message == f"{path}: cannot read annotation file (Is a directory)"


def test_csv_that_is_a_directory(folder_csv):
    root, _ = folder_csv
    (root / "train.csv").mkdir()
    path = root / "train.csv"
    assert one_line_error(lambda: FolderCSV(root), f"{path}: ") == f"{path}: cannot read CSV file (Is a directory)"


def test_voc_xml_that_is_a_directory(imagenet_root):
    xml = imagenet_root / "val/ILSVRC2012_val_00000002.xml"
    xml.unlink()
    xml.mkdir()
    message = one_line_error(lambda: ImageNet(imagenet_root, "val"), f"{xml}: ")
    assert message == f"{xml}: cannot read annotation file (Is a directory)"


def test_image_folder_that_is_a_file(tiny_root):
    images = tiny_root / "val/images"
    for child in images.iterdir():
        child.unlink()
    images.rmdir()
    images.write_text("not a folder")
    message = one_line_error(lambda: TinyImageNet(tiny_root, "val"), f"{images}: ")
    assert message == f"{images}: cannot list directory (Not a directory)"


def test_csv_header_naming_a_column_twice(folder_csv):
    root, csv_path = folder_csv
    text = csv_path.read_text().splitlines()
    text[0] += ",x0"
    csv_path.write_text("\n".join(line + ",0" if i else line for i, line in enumerate(text)) + "\n")
    message = one_line_error(lambda: FolderCSV(root, csv_path=csv_path), f"{csv_path}:1: ")
    assert message.endswith("names column(s) ['x0'] more than once")


def test_classes_txt_repeating_a_name(folder_csv):
    root, csv_path = folder_csv
    (root / "classes.txt").write_text("sparrow\ncat\n\nsparrow\n")
    location = f"{root / 'classes.txt'}:4"
    message = one_line_error(lambda: FolderCSV(root, csv_path=csv_path), f"{location}: ")
    assert message == f"{location}: class name 'sparrow' was already given on line 1"
    with pytest.raises(ValueError, match=r"class_names repeats \['cat'\]"):
        FolderCSV(root, csv_path=csv_path, class_names=["cat", "sparrow", "cat"])


def test_classes_txt_not_utf8(folder_csv):
    root, csv_path = folder_csv
    (root / "classes.txt").write_bytes(b"sparrow\n\xff\xfecat\n")
    path = root / "classes.txt"
    assert "not a UTF-8 text file" in one_line_error(lambda: FolderCSV(root, csv_path=csv_path), f"{path}: ")


def test_missing_trimap_is_named_as_missing(pets_root):
    trimap = pets_root / "annotations/trimaps/Bengal_1.png"
    trimap.unlink()
    message = one_line_error(lambda: OxfordPets(pets_root, "all"), f"{trimap}: ")
    assert message == f"{trimap}: annotation image not found"


def test_float_image_with_nan_pixels(tmp_path):
    path = tmp_path / "depth.tiff"
    values = np.zeros((3, 4), np.float32)
    values[1, 2] = np.nan
    Image.fromarray(values).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        message = one_line_error(lambda: load_rgb(path), f"{path}: ")
    assert message == f"{path}: image has NaN or infinite pixel values"
