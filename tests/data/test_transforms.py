"""The benchmark pipelines keep boxes and masks on the object; collate batches the contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from spgkit.config import ConfigError, Data
from spgkit.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BenchmarkResize,
    SynthWSOL,
    collate,
    eval_transform,
    make_sample,
    train_transform,
)


def rectangle_sample(size: tuple[int, int], box: tuple[int, int, int, int], extra_boxes=()):
    """An image that is white exactly on ``box`` (the mask too), black elsewhere."""
    height, width = size
    x0, y0, x1, y1 = box
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 1
    image = np.repeat(mask[..., None] * 255, 3, axis=2).astype(np.uint8)
    return make_sample(image, 0, np.array([box, *extra_boxes]), mask, None, "rectangle")


def test_train_transform_moves_box_and_mask_together(extent):
    # 128 -> resize 64 (exact halving), random crop 56, flip. The rectangle touches the left and
    # bottom edges, so crops clip it; the second box is cut away by every crop with an offset.
    transform = train_transform(56, mean=(0.5,) * 3, std=(0.5,) * 3)
    flips, cut_away = set(), 0
    for seed in range(40):
        torch.manual_seed(seed)
        out = transform(rectangle_sample((128, 128), (0, 60, 40, 128), extra_boxes=[(0, 0, 2, 2)]))
        assert tuple(out["image"].shape) == (3, 56, 56) and out["image"].dtype == torch.float32
        assert tuple(out["boxes"].canvas_size) == (56, 56) and out["boxes"].shape == (2, 4)
        box = out["boxes"][0].tolist()
        assert extent(out["mask"]) == box
        # The image's white region is the mask too (up to the resize's one-pixel blur at edges).
        white = out["image"][0] > 0
        assert (white == out["mask"].bool()).float().mean() > 0.97
        flips.add(box[0] > 0)  # unflipped, the rectangle touches the left edge
        small = out["boxes"][1]
        cut_away += bool(small[2] <= small[0] or small[3] <= small[1])
        assert (out["boxes"] >= 0).all() and (out["boxes"] <= 56).all()
    assert flips == {True, False}
    assert cut_away > 0  # a box cropped away entirely stays, clamped to zero area


def test_train_transform_resize_is_size_times_256_over_224():
    # A box covering the whole image shows the size before the crop: round(64 * 256 / 224) = 73.
    transform = train_transform(64)
    sample = rectangle_sample((100, 100), (0, 0, 100, 100))
    resized = transform.transforms[0](sample)
    assert tuple(resized["image"].shape[-2:]) == (73, 73) and resized["boxes"][0].tolist() == [0, 0, 73, 73]


def test_eval_transform_resizes_boxes_exactly_and_normalises(extent):
    out = eval_transform(56)(rectangle_sample((50, 100), (10, 20, 60, 40)))
    assert out["boxes"][0].tolist() == pytest.approx([5.6, 22.4, 33.6, 44.8])
    assert extent(out["mask"]) == pytest.approx([6, 22, 34, 45], abs=1)  # nearest resize, within a pixel
    white = out["image"][:, 30, 20].tolist()  # inside the rectangle: value 1.0 before normalising
    black = out["image"][:, 2, 2].tolist()
    assert white == pytest.approx([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], rel=1e-5)
    assert black == pytest.approx([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], rel=1e-5)


def test_tf_style_normalisation():
    out = eval_transform(20, mean=(0.5,) * 3, std=(0.5,) * 3)(rectangle_sample((20, 20), (0, 0, 10, 20)))
    assert out["image"][:, 5, 5].tolist() == [1.0, 1.0, 1.0]
    assert out["image"][:, 5, 15].tolist() == [-1.0, -1.0, -1.0]


def test_collate_batches_the_contract():
    transform = eval_transform(32)
    first = rectangle_sample((40, 40), (0, 0, 10, 10), extra_boxes=[(20, 20, 40, 40)])
    second = rectangle_sample((64, 48), (4, 4, 8, 8))
    second["label"], second["image_id"] = 3, "other"
    second["ignore"] = second["mask"].clone()
    batch = collate([transform(first), transform(second)])
    assert batch["images"].shape == (2, 3, 32, 32) and batch["images"].dtype == torch.float32
    assert type(batch["images"]) is torch.Tensor  # plain tensors, not tv_tensors
    assert batch["labels"].tolist() == [0, 3] and batch["labels"].dtype == torch.long
    assert [b.shape for b in batch["boxes"]] == [(2, 4), (1, 4)] and batch["boxes"][0].dtype == torch.float32
    assert batch["boxes"][0][1].tolist() == [16, 16, 32, 32]
    assert batch["masks"].dtype == torch.bool and batch["masks"].shape == (2, 32, 32)
    # The first sample has no ignore region: it contributes zeros, the second its own.
    assert batch["ignore"][0].sum() == 0 and torch.equal(batch["ignore"][1], batch["masks"][1])
    assert batch["image_ids"] == ["rectangle", "other"]


def test_collate_masks_none_if_any_sample_lacks_one():
    transform = eval_transform(16)
    first, second = rectangle_sample((16, 16), (0, 0, 4, 4)), rectangle_sample((16, 16), (0, 0, 4, 4))
    second["mask"] = None
    batch = collate([transform(first), transform(second)])
    assert batch["masks"] is None and batch["ignore"] is None


def test_collate_extra_keys_of_synthwsol():
    dataset = SynthWSOL(num_images=3, transform=eval_transform(32))
    batch = collate([dataset[i] for i in range(3)])
    assert [b.shape for b in batch["part_box"]] == [(1, 4)] * 3
    assert batch["part_mask"].dtype == torch.bool and batch["part_mask"].shape == (3, 32, 32)
    assert (batch["part_mask"] <= batch["masks"]).all()  # the part is part of the object


def test_collate_refuses_untransformed_images():
    sample = rectangle_sample((8, 8), (0, 0, 4, 4))
    with pytest.raises(TypeError, match="uint8.*eval_transform"):
        collate([sample])


def test_benchmark_resize_is_pils_for_images_and_opencvs_for_masks():
    # Images: the benchmark's loaders resize PIL images (bilinear, antialiased); torchvision's
    # tensor kernel rounds differently on some pixels, so it would fail this.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for height, width in ((24, 24), (20, 31)):
        resized = BenchmarkResize((height, width))(tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)))
        expected = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
        assert isinstance(resized, tv_tensors.Image) and resized.dtype == torch.uint8
        assert np.array_equal(resized.permute(1, 2, 0).numpy(), expected)
    tensor_kernel = v2.Resize((20, 31), antialias=True)(torch.from_numpy(image).permute(2, 0, 1))
    assert not torch.equal(tensor_kernel, resized)
    # Masks: cv2.INTER_NEAREST. Six rows to 34: output row 17 maps to 17 * 6 / 34 = 3, which
    # OpenCV computes as 2.999... -> row 2 and torchvision as row 3; so a mask on row 3 alone
    # covers output rows 18-22 (OpenCV) rather than 17-22 (torchvision).
    mask = np.zeros((6, 1), np.uint8)
    mask[3] = 1
    resized = BenchmarkResize((34, 1))(tv_tensors.Mask(torch.from_numpy(mask)))
    assert isinstance(resized, tv_tensors.Mask)
    assert np.flatnonzero(resized[:, 0].numpy()).tolist() == [18, 19, 20, 21, 22]
    assert np.flatnonzero(v2.Resize((34, 1))(tv_tensors.Mask(torch.from_numpy(mask)))[:, 0].numpy()).tolist() == [17, 18, 19, 20, 21, 22]


def test_both_pipelines_resize_as_asked():
    sample = rectangle_sample((37, 53), (5, 7, 30, 25))
    image = sample["image"]
    for resize, expected in (
        ("benchmark", BenchmarkResize((32, 32))(image)),
        ("torchvision", v2.Resize((32, 32), antialias=True)(image)),
    ):
        out = eval_transform(32, (0.0,) * 3, (1.0,) * 3, resize)(sample)
        assert torch.equal((out["image"] * 255).round().to(torch.uint8), expected)
        assert torch.allclose(out["boxes"], torch.tensor([[5 * 32 / 53, 7 * 32 / 37, 30 * 32 / 53, 25 * 32 / 37]]))
    with pytest.raises(ValueError, match="unknown resize 'pil'"):
        train_transform(32, resize="pil")
    with pytest.raises(ConfigError, match="resize"):
        Data(name="synthwsol", resize="pil")
