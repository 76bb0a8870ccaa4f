"""Bad input fails loudly, naming the file (and line); ``on_error="skip"`` counts and reports."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from PIL import Image

from spgkit.data import CUB, DataError, FolderCSV, ImageNet, OxfordPets, TinyImageNet, WSOLMetadata


def raises_at(prefix: str, *words: str):
    """Context manager: a DataError whose message starts with ``prefix`` and contains ``words``."""
    return _RaisesAt(prefix, words)


class _RaisesAt:
    def __init__(self, prefix: str, words: tuple[str, ...]) -> None:
        self.prefix, self.words = prefix, words

    def __enter__(self):
        self.context = pytest.raises(DataError)
        self.info = self.context.__enter__()
        return self.info

    def __exit__(self, *exc):
        suppressed = self.context.__exit__(*exc)
        message = str(self.info.value)
        assert message.startswith(self.prefix), message
        for word in self.words:
            assert word in message, message
        return suppressed


def replace_line(path, lineno: int, text: str | None) -> None:
    """Replace (or with None, delete) 1-based line ``lineno`` of a text file."""
    lines = path.read_text().splitlines()
    if text is None:
        del lines[lineno - 1]
    else:
        lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


# --- unreadable and truncated images ----------------------------------------------------------


def test_unreadable_image_named_with_the_line_that_lists_it(cub_root):
    (cub_root / "images/002.Auklet/c.jpg").write_bytes(b"this is not an image")
    with raises_at(f"{cub_root / 'images.txt'}:3: ", "c.jpg", "not a readable image"):
        CUB(cub_root, "train")


def test_missing_image_file(folder_csv):
    root, csv_path = folder_csv
    (root / "cats/2.png").unlink()
    with raises_at(f"{csv_path}:4: ", "cats/2.png", "not found"):
        FolderCSV(root, csv_path=csv_path)


def test_undecodable_image_raises_at_getitem_with_its_path(metadata_boxes):
    meta, images = metadata_boxes
    dataset = WSOLMetadata(meta, images, "test", num_classes=3)  # sizes come from image_sizes.txt
    (images / "001.A/a.jpg").write_bytes(b"\x89PNG garbage")
    with raises_at(f"{images / '001.A/a.jpg'}: ", "cannot decode image"):
        dataset[1]


def test_truncated_image_raises_at_getitem_with_its_path(folder_csv):
    root, csv_path = folder_csv
    path = root / "birds/1.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
        path, format="JPEG"
    )
    path.write_bytes(path.read_bytes()[:-200])  # the header survives, the end of the pixel data does not
    dataset = FolderCSV(root, csv_path=csv_path)
    with raises_at(f"{path}: ", "cannot decode image", "truncated"):
        dataset[0]
    assert dataset[1]["image_id"] == "cats/2.png"  # one bad file does not poison the others


def test_image_size_differing_from_its_annotation(metadata_boxes):
    meta, images = metadata_boxes
    replace_line(meta / "test/image_sizes.txt", 2, "002.B/b.jpg,21,10")
    replace_line(meta / "test/localization.txt", 2, "002.B/b.jpg,0,0,19,9")
    dataset = WSOLMetadata(meta, images, "test", num_classes=3)
    with raises_at(f"{images / '002.B/b.jpg'}: ", "decoded as 20x10", "says 21x10"):
        dataset[0]


# --- missing annotations ----------------------------------------------------------------------


def test_cub_image_without_box_line(cub_root):
    replace_line(cub_root / "bounding_boxes.txt", 3, None)
    with raises_at(f"{cub_root / 'images.txt'}:3: ", "image id 3 has no line in bounding_boxes.txt"):
        CUB(cub_root, "train")


def test_metadata_image_without_label(metadata_boxes):
    meta, images = metadata_boxes
    replace_line(meta / "test/class_labels.txt", 1, None)
    with raises_at(f"{meta / 'test/image_ids.txt'}:2: ", "'001.A/a.jpg' has no line in class_labels.txt"):
        WSOLMetadata(meta, images, "test", num_classes=3)


def test_metadata_image_without_localization(metadata_boxes):
    meta, images = metadata_boxes
    replace_line(meta / "test/localization.txt", 2, None)
    with raises_at(f"{meta / 'test/image_ids.txt'}:1: ", "has no line in localization.txt"):
        WSOLMetadata(meta, images, "test", num_classes=3)


def test_tiny_image_without_box_line(tiny_root):
    boxes = tiny_root / "train/n09000000/n09000000_boxes.txt"
    replace_line(boxes, 2, None)
    with raises_at(f"{boxes}: ", "no line for image n09000000_1.JPEG"):
        TinyImageNet(tiny_root, "train")


def test_tiny_line_naming_a_missing_image(tiny_root):
    (tiny_root / "val/images/val_1.JPEG").unlink()
    with raises_at(f"{tiny_root / 'val/val_annotations.txt'}:1: ", "val_1.JPEG not found"):
        TinyImageNet(tiny_root, "val")


def test_imagenet_val_image_without_xml(imagenet_root):
    xml = imagenet_root / "val/ILSVRC2012_val_00000002.xml"
    xml.unlink()
    with raises_at(f"{xml}: ", "annotation file not found"):
        ImageNet(imagenet_root, "val")


def test_missing_annotation_file(cub_root):
    (cub_root / "train_test_split.txt").unlink()
    with raises_at(f"{cub_root / 'train_test_split.txt'}: ", "not found"):
        CUB(cub_root)


# --- malformed lines --------------------------------------------------------------------------


def test_cub_box_field_not_a_number(cub_root):
    replace_line(cub_root / "bounding_boxes.txt", 3, "3 5.5 one 2.0 2.0")
    with raises_at(f"{cub_root / 'bounding_boxes.txt'}:3: ", "y 'one' is not a number"):
        CUB(cub_root, "train")


def test_cub_wrong_field_count(cub_root):
    replace_line(cub_root / "image_class_labels.txt", 2, "2")
    with raises_at(f"{cub_root / 'image_class_labels.txt'}:2: ", "expected 2 fields", "found 1"):
        CUB(cub_root, "all")


def test_cub_repeated_image_id(cub_root):
    (cub_root / "images.txt").write_text((cub_root / "images.txt").read_text() + "2 002.Auklet/b.jpg\n")
    with raises_at(f"{cub_root / 'images.txt'}:4: ", "'2' was already given on line 2"):
        CUB(cub_root, "all")


def test_metadata_short_localization_line(metadata_boxes):
    meta, images = metadata_boxes
    replace_line(meta / "test/localization.txt", 3, "001.A/a.jpg,20,0,39")
    with raises_at(f"{meta / 'test/localization.txt'}:3: ", "expected 5 fields"):
        WSOLMetadata(meta, images, "test", num_classes=3)


def test_metadata_second_ignore_path_for_one_image(tmp_path, write_image, write_text):
    meta, images = tmp_path / "meta", tmp_path / "images"
    write_image(images / "x.jpg", 4, 4)
    for name in ("m1.png", "m2.png", "ig.png"):
        Image.fromarray(np.full((4, 4), 255, np.uint8)).save(images / name)
    write_text(meta / "test/image_ids.txt", "x.jpg")
    write_text(meta / "test/class_labels.txt", "x.jpg,0")
    write_text(meta / "test/image_sizes.txt", "x.jpg,4,4")
    (meta / "test/localization.txt").write_text("x.jpg,m1.png,ig.png\nx.jpg,m2.png,ig.png\n")
    with raises_at(f"{meta / 'test/localization.txt'}:2: ", "ignore path on a later line"):
        WSOLMetadata(meta, images, "test", num_classes=1)


def test_metadata_empty_instance_mask_raises_at_getitem(tmp_path, write_image, write_text):
    meta, images = tmp_path / "meta", tmp_path / "images"
    write_image(images / "x.jpg", 4, 4)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(images / "m.png")
    write_text(meta / "test/image_ids.txt", "x.jpg")
    write_text(meta / "test/class_labels.txt", "x.jpg,0")
    write_text(meta / "test/image_sizes.txt", "x.jpg,4,4")
    (meta / "test/localization.txt").write_text("x.jpg,m.png,\n")
    dataset = WSOLMetadata(meta, images, "test", num_classes=1)
    with raises_at(f"{images / 'm.png'}: ", "no foreground pixels"):
        dataset[0]


def test_tiny_val_line_with_missing_field(tiny_root):
    replace_line(tiny_root / "val/val_annotations.txt", 2, "val_0.JPEG\tn09000000\t0\t32\t44")
    with raises_at(f"{tiny_root / 'val/val_annotations.txt'}:2: ", "expected 6 fields", "found 5"):
        TinyImageNet(tiny_root, "val")


def test_malformed_xml_named_with_its_line(imagenet_root):
    xml = imagenet_root / "val/ILSVRC2012_val_00000001.xml"
    xml.write_text(
        "<annotation>\n<size><width>50</width>\n<height>40</height></size>\n<object>\n</annotation>\n"
    )
    with raises_at(f"{xml}:5: ", "malformed XML"):
        ImageNet(imagenet_root, "val")


def test_xml_object_of_another_class(imagenet_root):
    xml = imagenet_root / "val/ILSVRC2012_val_00000001.xml"
    xml.write_text(xml.read_text().replace("n02000000", "n01000000", 1))
    with raises_at(f"{xml}: ", "objects of different classes"):
        ImageNet(imagenet_root, "val")


def test_csv_row_with_missing_field(folder_csv):
    root, csv_path = folder_csv
    replace_line(csv_path, 3, "20,0,birds/1.jpg,30,20,sparrow")
    with raises_at(f"{csv_path}:3: ", "6 fields where the header has 7"):
        FolderCSV(root, csv_path=csv_path)


def test_csv_without_header(folder_csv):
    root, csv_path = folder_csv
    replace_line(csv_path, 1, None)
    with raises_at(f"{csv_path}:1: ", "must name image,label,x0,y0,x1,y1"):
        FolderCSV(root, csv_path=csv_path)


def test_csv_rows_of_one_image_disagree_on_label(folder_csv):
    root, csv_path = folder_csv
    replace_line(csv_path, 3, "20,0,birds/1.jpg,30,20,robin,")
    with raises_at(f"{csv_path}:3: ", "label 'robin' differs from 'sparrow' on line 2"):
        FolderCSV(root, csv_path=csv_path)


def test_pets_list_line_with_bad_class_id(pets_root):
    replace_line(pets_root / "annotations/trainval.txt", 2, "Abyssinian_3 one 1 1")
    with raises_at(f"{pets_root / 'annotations/trainval.txt'}:2: ", "class id 'one' is not an integer"):
        OxfordPets(pets_root, "trainval")


def test_pets_class_id_inconsistent_with_breed(pets_root):
    replace_line(pets_root / "annotations/trainval.txt", 2, "Abyssinian_3 6 1 1")
    with raises_at(
        f"{pets_root / 'annotations/trainval.txt'}:2: ", "class id 6 names both 'Bengal' and 'Abyssinian'"
    ):
        OxfordPets(pets_root, "trainval")


def test_pets_trimap_without_pet(pets_root):
    trimap = pets_root / "annotations/trimaps/Abyssinian_4.png"
    Image.fromarray(np.full((8, 10), 2, np.uint8)).save(trimap)
    with raises_at(f"{trimap}: ", "no pet pixels"):
        OxfordPets(pets_root, "all")


def test_pets_trimap_with_foreign_values(pets_root):
    trimap = pets_root / "annotations/trimaps/Bengal_1.png"
    values = np.full((8, 10), 2, np.uint8)
    values[2:4, 2:4] = 255  # a binary mask saved where a trimap belongs
    Image.fromarray(values).save(trimap)
    with raises_at(f"{trimap}: ", "trimap values [255] are not 1, 2 or 3"):
        OxfordPets(pets_root, "trainval")


# --- boxes outside the image ------------------------------------------------------------------


def test_tiny_box_outside_image(tiny_root):
    boxes = tiny_root / "train/n09000000/n09000000_boxes.txt"
    replace_line(boxes, 2, "n09000000_1.JPEG\t5\t6\t70\t9")
    with raises_at(f"{boxes}:2: ", "box (5, 6, 71, 10) lies outside the 64x64 image"):
        TinyImageNet(tiny_root, "train")


def test_cub_box_outside_image(cub_root):
    replace_line(cub_root / "bounding_boxes.txt", 3, "3 5.5 1.0 15.0 2.0")  # c.jpg is 20 wide
    with raises_at(f"{cub_root / 'bounding_boxes.txt'}:3: ", "lies outside the 20x10 image"):
        CUB(cub_root, "train")


def test_metadata_box_outside_image(metadata_boxes):
    meta, images = metadata_boxes
    replace_line(meta / "test/localization.txt", 1, "001.A/a.jpg,3,4,12,31")  # a.jpg is 40x30
    with raises_at(f"{meta / 'test/localization.txt'}:1: ", "lies outside the 40x30 image"):
        WSOLMetadata(meta, images, "test", num_classes=3)


def test_empty_box(folder_csv):
    root, csv_path = folder_csv
    replace_line(csv_path, 4, "5,0,cats/2.png,5,16,cat,")
    with raises_at(f"{csv_path}:4: ", "box (5, 0, 5, 16) is empty"):
        FolderCSV(root, csv_path=csv_path)


def test_xml_box_outside_image(imagenet_root):
    xml = imagenet_root / "val/ILSVRC2012_val_00000002.xml"
    xml.write_text(xml.read_text().replace("<ymax>5</ymax>", "<ymax>25</ymax>"))
    with raises_at(f"{xml}: ", "object 1: box", "outside the 30x20 image"):
        ImageNet(imagenet_root, "val")


# --- empty splits and labels out of range -----------------------------------------------------


def test_empty_split(cub_root):
    (cub_root / "train_test_split.txt").write_text("1 1\n2 1\n3 1\n")
    with raises_at(f"{cub_root}: ", "no usable images"):
        CUB(cub_root, "test")


def test_empty_metadata_split(metadata_boxes):
    meta, images = metadata_boxes
    for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt"):
        (meta / "test" / name).write_text("")
    (meta / "test/localization.txt").unlink()
    with raises_at(f"{meta / 'test'}: ", "no usable images"):
        WSOLMetadata(meta, images, "test", num_classes=3)


def test_metadata_label_out_of_range(metadata_boxes):
    meta, images = metadata_boxes
    with raises_at(f"{meta / 'test/class_labels.txt'}:2: ", "label 2 outside [0, 2)"):
        WSOLMetadata(meta, images, "test", num_classes=2)


def test_cub_class_id_not_in_classes(cub_root):
    replace_line(cub_root / "image_class_labels.txt", 3, "3 5")
    with raises_at(f"{cub_root / 'image_class_labels.txt'}:3: ", "class id 5 is not in classes.txt"):
        CUB(cub_root, "train")


def test_tiny_unknown_wnid(tiny_root):
    replace_line(tiny_root / "val/val_annotations.txt", 1, "val_1.JPEG\tn07000000\t10\t11\t12\t13")
    with raises_at(f"{tiny_root / 'val/val_annotations.txt'}:1: ", "wnid 'n07000000' is not in wnids.txt"):
        TinyImageNet(tiny_root, "val")


def test_pets_class_id_out_of_range(pets_root):
    replace_line(pets_root / "annotations/test.txt", 1, "american_bulldog_7 40 2 1")
    with raises_at(f"{pets_root / 'annotations/test.txt'}:1: ", "class id 40 outside 1..37"):
        OxfordPets(pets_root, "test")


def test_csv_label_not_among_class_names(folder_csv):
    root, csv_path = folder_csv
    with raises_at(f"{csv_path}:4: ", "label 'cat' is not one of the 2 class names"):
        FolderCSV(root, csv_path=csv_path, class_names=["sparrow", "dog"])


def test_xml_class_not_in_class_list(imagenet_root):
    xml = imagenet_root / "val/ILSVRC2012_val_00000002.xml"
    with raises_at(f"{xml}: ", "class 'n01000000' is not one of the 1 classes"):
        ImageNet(imagenet_root, "val", wnids=["n02000000"])


# --- on_error="skip" --------------------------------------------------------------------------


def test_skip_counts_reports_and_drops_whole_images(cub_root):
    replace_line(cub_root / "bounding_boxes.txt", 3, "3 5.5 1.0 15.0 2.0")
    with pytest.warns(
        UserWarning, match=r"CUB: 1 problem\(s\) .* skipped .* 1 image\(s\) rejected"
    ) as record:
        dataset = CUB(cub_root, "train", on_error="skip")
    assert len(record) == 1
    assert str(cub_root / "bounding_boxes.txt:3") in str(record[0].message)
    assert [r.image_id for r in dataset.records] == ["001.Albatross/a.jpg"]
    assert dataset.skipped == [
        (f"{cub_root / 'bounding_boxes.txt'}:3", "box (5.5, 1, 20.5, 3) lies outside the 20x10 image")
    ]


def test_skip_drops_an_image_with_a_bad_line_whatever_its_other_lines(metadata_boxes):
    meta, images = metadata_boxes
    replace_line(meta / "test/localization.txt", 3, "001.A/a.jpg,20,0,39")  # a.jpg's first box is fine
    with pytest.warns(UserWarning, match=r"1 problem\(s\).* 1 image\(s\) rejected"):
        dataset = WSOLMetadata(meta, images, "test", num_classes=3, on_error="skip")
    assert [r.image_id for r in dataset.records] == ["002.B/b.jpg"]
    assert dataset.skipped == [
        (
            f"{meta / 'test/localization.txt'}:3",
            "expected 5 fields (image_id,x0,y0,x1,y1), found 4 in '001.A/a.jpg,20,0,39'",
        )
    ]


def test_skip_drops_an_image_with_a_repeated_line(tiny_root):
    boxes = tiny_root / "train/n09000000/n09000000_boxes.txt"
    boxes.write_text(boxes.read_text() + "n09000000_0.JPEG\t1\t1\t2\t2\n")
    with pytest.warns(UserWarning, match="already given on line 1"):
        dataset = TinyImageNet(tiny_root, "train", on_error="skip")
    assert [r.image_id for r in dataset.records] == ["n01000000_0.JPEG", "n09000000_1.JPEG"]
    assert dataset.skipped[0][0] == f"{boxes}:3"


def test_skip_keeps_working_images_of_the_real_kind(pets_root):
    Image.fromarray(np.full((8, 10), 2, np.uint8)).save(pets_root / "annotations/trimaps/Bengal_1.png")
    with pytest.warns(UserWarning, match="no pet pixels"):
        dataset = OxfordPets(pets_root, "all", on_error="skip")
    assert len(dataset) == 3 and dataset.num_classes == 3  # the breed stays a class: labels do not shift
    assert dataset.skipped[0][0] == str(pets_root / "annotations/trimaps/Bengal_1.png")


def test_skip_everything_is_still_an_empty_split(tiny_root):
    replace_line(tiny_root / "val/val_annotations.txt", 1, "val_1.JPEG\tn07000000\t10\t11\t12\t13")
    replace_line(tiny_root / "val/val_annotations.txt", 2, "val_0.JPEG\tn07000000\t10\t11\t12\t13")
    with pytest.warns(UserWarning, match="2 image"), raises_at(f"{tiny_root / 'val'}: ", "no usable images"):
        TinyImageNet(tiny_root, "val", on_error="skip")


def test_no_warning_when_nothing_is_skipped(cub_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CUB(cub_root, "all", on_error="skip").skipped == []


def test_unknown_error_policy(cub_root):
    with pytest.raises(ValueError, match="on_error"):
        CUB(cub_root, on_error="ignore")


def test_data_error_survives_a_dataloader_worker(folder_csv):
    # Workers send exceptions back pickled, and torch rebuilds them from one message argument.
    error = DataError("/data/x.csv:3", "box is empty")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is DataError and str(copy) == "/data/x.csv:3: box is empty"
    assert (error.location, error.reason) == ("/data/x.csv:3", "box is empty")
    assert str(DataError("already formatted")) == "already formatted"
    root, csv_path = folder_csv
    dataset = pickle.loads(pickle.dumps(FolderCSV(root, csv_path=csv_path)))  # spawn-started workers need this
    assert dataset[0]["boxes"].shape == (2, 4)
